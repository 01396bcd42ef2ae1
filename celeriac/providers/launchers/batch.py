"""Launchers that hand the copies to the batch system's own task starter: Slurm's ``srun``,
Cray ALPS's ``aprun``, IBM LSF's ``jsrun``. Run inside the block's allocation."""

from __future__ import annotations

from celeriac.providers.launchers import _script
from celeriac.providers.launchers.base import Launcher

_SLURM = {"CORES": "$SLURM_CPUS_ON_NODE", "NODES": "$SLURM_JOB_NUM_NODES"}


class _OverridesLauncher(Launcher):
    """A launcher whose only option, besides debug, is extra arguments for its starter."""

    def __init__(self, debug: bool = True, overrides: str = ""):
        super().__init__(debug)
        self.overrides = overrides

    def __repr__(self):
        return f"{type(self).__name__}(overrides={self.overrides!r})"

    def _one_step(self, command: str, count: int, exports: dict, starter: tuple,
                  shell: str) -> str:
        """The script that runs every copy as one step of ``starter`` (its program and
        arguments), the overrides after them, then ``shell -c "$CMD"``."""
        return (
            _script.preamble(self.debug, count, exports)
            + _script.command_variable(command)
            + _script.command_line(*starter, self.overrides, f'{shell} -c "$CMD"')
            + _script.done(self.debug, "Done")
        )


class SrunLauncher(_OverridesLauncher):
    """Run ``tasks_per_node`` copies on each of the allocation's ``nodes_per_block`` nodes as
    one ``srun`` step (``srun --ntasks=N --ntasks-per-node=T``). The block fails if any copy
    fails.

    Args:
        overrides: more srun arguments (e.g. ``--cpu-bind=none``), placed before the command.
    """

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        count = tasks_per_node * nodes_per_block
        return self._one_step(command, count, _SLURM, ("srun", f"--ntasks={count}",
                              f"--ntasks-per-node={tasks_per_node}", "-l"), "bash")


class SrunMPILauncher(_OverridesLauncher):
    """Start one ``srun`` step per worker (``tasks_per_node * nodes_per_block`` of them), each
    with its share of the allocation, so that each worker can launch MPI applications in its
    own step. More workers than nodes: the cores are split between them; otherwise each gets
    whole nodes (``--exclusive``). The block fails if any step fails.

    Args:
        overrides: more srun arguments, placed before the command.
    """

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        count = tasks_per_node * nodes_per_block
        debug = self.debug
        return (
            _script.preamble(debug, count, _SLURM)
            + _script.command_variable(command)
            + f"TASKBLOCKS={count}\n"
            + 'if (( TASKBLOCKS > NODES )); then\n'
            + ('    echo "TaskBlocks:$TASKBLOCKS > Nodes:$NODES"\n' if debug else "")
            # at least one core each (Parsl's integer division could ask srun for 0 tasks)
            + '    CORES_PER_BLOCK=$(( NODES * CORES / TASKBLOCKS ))\n'
            + '    (( CORES_PER_BLOCK >= 1 )) || CORES_PER_BLOCK=1\n'
            + '    STEP="--ntasks $CORES_PER_BLOCK"\n'
            + 'else\n'
            + ('    echo "TaskBlocks:$TASKBLOCKS <= Nodes:$NODES"\n' if debug else "")
            + '    STEP="--exclusive --nodes $(( NODES / TASKBLOCKS ))"\n'
            + 'fi\n'
            + 'PIDS=""\n'
            # Parsl's `seq ...):` gave the last step the value "N:" and its bare `wait`
            # returned 0 whatever the steps did
            + 'for BLOCK in $(seq 1 $TASKBLOCKS); do\n'
            + "    " + _script.command_line("srun $STEP -l", self.overrides,
                                            'bash -c "$CMD" &')
            + '    PIDS="$PIDS $!"\n'
            + 'done\n'
            + 'FAILED=0\n'
            + 'for PID in $PIDS; do wait "$PID" || FAILED=1; done\n'
            + _script.done(debug, "Done")
            + 'exit $FAILED\n'
        )


class AprunLauncher(_OverridesLauncher):
    """Run ``tasks_per_node`` copies on each of ``nodes_per_block`` nodes with Cray's
    ``aprun -n N -N T``. The block fails if aprun reports a failure.

    Args:
        overrides: more aprun arguments, placed before the command.
    """

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        count = tasks_per_node * nodes_per_block
        return self._one_step(command, count, {},
                              ("aprun", f"-n {count}", f"-N {tasks_per_node}"), "/bin/bash")


class JsrunLauncher(_OverridesLauncher):
    """Run ``tasks_per_node`` copies on each of ``nodes_per_block`` nodes with IBM's
    ``jsrun -n N -r T`` (N resource sets, T per host). The block fails if jsrun does.

    Args:
        overrides: more jsrun arguments, placed before the command.
    """

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        count = tasks_per_node * nodes_per_block
        return self._one_step(command, count, {},
                              ("jsrun", f"-n {count}", f"-r {tasks_per_node}"), "/bin/bash")
