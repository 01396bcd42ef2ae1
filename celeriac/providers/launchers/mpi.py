"""Launchers that start the copies with an MPI process manager (mpiexec, mpirun)."""

from __future__ import annotations

from celeriac.providers.launchers import _script
from celeriac.providers.launchers.base import Launcher

_CORES = {"CORES": "$(getconf _NPROCESSORS_ONLN)"}


class MpiExecLauncher(Launcher):
    """Run ``tasks_per_node * nodes_per_block`` copies with ``mpiexec`` over the hosts of
    ``$PBS_NODEFILE`` (this host when there is none). The block fails if any copy fails.

    Args:
        bind_cmd: mpiexec's option for binding ranks to CPUs (given ``none``).
        overrides: more mpiexec arguments, placed before ``-n``.
    """

    def __init__(self, debug: bool = True, bind_cmd: str = "--bind-to", overrides: str = ""):
        super().__init__(debug)
        self.bind_cmd = bind_cmd
        self.overrides = overrides

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        return (
            _script.preamble(self.debug, tasks_per_node * nodes_per_block, _CORES)
            + _script.command_variable(command)
            + _script.nodes_file("localhost")
            + _script.command_line("mpiexec", self.bind_cmd, "none", self.overrides,
                                   "-n $WORKERCOUNT", '--hostfile "$NODEFILE"',
                                   '/bin/bash -c "$CMD"')
            + _script.done(self.debug)
        )

    def __repr__(self):
        return f"MpiExecLauncher(bind_cmd={self.bind_cmd!r}, overrides={self.overrides!r})"


class MpiRunLauncher(Launcher):
    """Run ``tasks_per_node * nodes_per_block`` copies with ``mpirun -np``; mpirun finds the
    hosts itself (or from ``overrides``). The block fails if any copy fails.

    Args:
        bash_location: the bash each copy runs the command with.
        overrides: more mpirun arguments, placed after ``-np N``.
    """

    def __init__(self, debug: bool = True, bash_location: str = "/bin/bash",
                 overrides: str = ""):
        super().__init__(debug)
        self.bash_location = bash_location
        self.overrides = overrides

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        return (
            _script.preamble(self.debug, tasks_per_node * nodes_per_block, _CORES)
            + _script.command_variable(command)
            + _script.command_line("mpirun -np $WORKERCOUNT", self.overrides,
                                   self.bash_location, '-c "$CMD"')
            + _script.done(self.debug)
        )

    def __repr__(self):
        return (f"MpiRunLauncher(bash_location={self.bash_location!r}, "
                f"overrides={self.overrides!r})")
