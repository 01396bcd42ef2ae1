"""Launchers that start the copies themselves: once, wrapped, in the background, or with GNU
parallel. Each turns the worker command into the text a block's job script runs."""

from __future__ import annotations

import logging

from celeriac.providers.launchers import _script
from celeriac.providers.launchers.base import Launcher

logger = logging.getLogger(__name__)


class SimpleLauncher(Launcher):
    """Run the command once, as is (the batch system or the command itself spreads work)."""

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        if nodes_per_block > 1:
            logger.warning("SimpleLauncher runs one copy per block, not one per node: "
                           "%d nodes requested, you may get fewer workers than expected",
                           nodes_per_block)
        return command


class WrappedLauncher(Launcher):
    """Run the command once, prefixed by ``prepend`` (e.g. a container runtime or ``time``).

    Args:
        prepend: shell text put before the command.
    """

    def __init__(self, prepend: str, debug: bool = True):
        super().__init__(debug)
        self.prepend = prepend

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        if tasks_per_node > 1 or nodes_per_block > 1:
            logger.warning("WrappedLauncher runs one copy per block and ignores "
                           "tasks_per_node=%d and nodes_per_block=%d",
                           tasks_per_node, nodes_per_block)
        return f"{self.prepend} {command}"

    def __repr__(self):
        return f"WrappedLauncher(prepend={self.prepend!r})"


class SingleNodeLauncher(Launcher):
    """Run ``tasks_per_node * nodes_per_block`` copies of the command on this node, in the
    background, and wait for them. Each copy gets its number (1..N) as ``$1``. The block fails
    when all copies fail (or when any does, with ``fail_on_any=True``)."""

    def __init__(self, debug: bool = True, fail_on_any: bool = False):
        super().__init__(debug)
        self.fail_on_any = fail_on_any

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        launch = '    echo "Launching worker: $COUNT"\n' if self.debug else ""
        return (
            _script.preamble(self.debug, tasks_per_node * nodes_per_block,
                             {"CORES": "$(getconf _NPROCESSORS_ONLN)"})
            + f"FAILONANY={int(self.fail_on_any)}\n"
            + 'PIDS=""\n\n'
            + f"CMD() {{\n{command}\n}}\n"
            + "for COUNT in $(seq 1 1 $WORKERCOUNT); do\n"
            + launch
            + "    CMD $COUNT &\n"
            + '    PIDS="$PIDS $!"\n'
            + "done\n\n"
            + "ALLFAILED=1\n"
            + "ANYFAILED=0\n"
            + "for PID in $PIDS; do\n"
            # Parsl's bare `wait $PID` under `set -e` ended the script at the first failed copy
            + '    wait "$PID" && rc=0 || rc=$?\n'
            + '    if [ "$rc" != "0" ]; then ANYFAILED=1; else ALLFAILED=0; fi\n'
            + "done\n"
            + _script.done(self.debug)
            + 'if [ "$FAILONANY" == "1" ]; then exit $ANYFAILED; else exit $ALLFAILED; fi\n'
        )

    def __repr__(self):
        return f"SingleNodeLauncher(fail_on_any={self.fail_on_any})"


class GnuParallelLauncher(Launcher):
    """Run ``tasks_per_node * nodes_per_block`` copies with GNU parallel, ``tasks_per_node`` at
    a time on each host of ``$PBS_NODEFILE`` (over passwordless SSH), or on this host when
    there is no node file. Each copy gets its number as ``$1``; the block fails if any copy
    fails. Needs ``parallel`` on the PATH."""

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        return (
            _script.preamble(self.debug, tasks_per_node * nodes_per_block,
                             {"CORES": "$(getconf _NPROCESSORS_ONLN)"})
            + _script.command_variable(command)
            # ':' is GNU parallel's name for "this host, no ssh" (Parsl's 'localhost' needs sshd)
            + _script.nodes_file(":")
            # -q passes "$CMD" through (and over ssh) as one word; parallel exits with the
            # number of failed copies, which `set -e` turns into the block's failure
            + 'seq 1 $WORKERCOUNT | parallel --joblog "${JOBNAME:-celeriac}.parallel.log" \\\n'
            + f'    --sshloginfile "$NODEFILE" --jobs {tasks_per_node} '
            + '-q bash -c "$CMD" celeriac-worker {}\n'
            + _script.done(self.debug)
        )
