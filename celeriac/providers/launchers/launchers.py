"""Parsl's launchers: each turns the worker command into the text a block's job script runs."""

from __future__ import annotations

from celeriac.providers.launchers.base import Launcher


class SimpleLauncher(Launcher):
    """Run the command once, as is (the batch system or the command itself spreads work)."""

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        return command


class SingleNodeLauncher(Launcher):
    """Run ``tasks_per_node * nodes_per_block`` copies of the command on this node, in the
    background, and wait for them. The block fails when all copies fail (or any, with
    ``fail_on_any=True``)."""

    def __init__(self, debug: bool = True, fail_on_any: bool = False):
        super().__init__(debug)
        self.fail_on_any = fail_on_any

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        debug = int(self.debug)
        return f'''set -e
export CORES=$(getconf _NPROCESSORS_ONLN)
[[ "{debug}" == "1" ]] && echo "Found cores : $CORES"
WORKERCOUNT={tasks_per_node * nodes_per_block}
FAILONANY={int(self.fail_on_any)}
PIDS=""

CMD() {{
{command}
}}
for COUNT in $(seq 1 1 $WORKERCOUNT); do
    [[ "{debug}" == "1" ]] && echo "Launching worker: $COUNT"
    CMD $COUNT &
    PIDS="$PIDS $!"
done

ALLFAILED=1
ANYFAILED=0
for PID in $PIDS ; do
    wait $PID && rc=0 || rc=$?
    if [ "$rc" != "0" ]; then
        ANYFAILED=1
    else
        ALLFAILED=0
    fi
done

[[ "{debug}" == "1" ]] && echo "All workers done"
if [ "$FAILONANY" == "1" ]; then
    exit $ANYFAILED
else
    exit $ALLFAILED
fi
'''
