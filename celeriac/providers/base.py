"""ExecutionProvider: gets blocks of resources from a batch system (or this machine).

The contract, as in Parsl: :meth:`submit` asks for one block that runs ``command`` (wrapped by
the provider's launcher so it starts on every node) and returns a job id; :meth:`status` says
where each job is, for many ids at once; :meth:`cancel` gives jobs back and is harmless for ids
that are unknown or already finished. A provider never talks to Celery: the executor builds
the worker command and counts capacity. Batch commands go through the provider's ``channel``
(this host by default), so the same provider drives a scheduler on a login node over SSH.

Errors: a block that cannot be started raises :class:`~celeriac.errors.ScaleOutFailed`, a
status query the scheduler refuses raises :class:`~celeriac.errors.ProviderError`; both quote
the scheduler's own stdout and stderr.
"""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

from celeriac.errors import ConfigurationError
from celeriac.option_checks import OptionChecks
from celeriac.providers.channels import Channel, LocalChannel
from celeriac.providers.launchers import Launcher, SingleNodeLauncher


class JobState(enum.Enum):
    """Where a block's job is, as in Parsl. A walltime TIMEOUT is not a failure."""

    UNKNOWN = 0
    PENDING = 1
    RUNNING = 2
    CANCELLED = 3
    COMPLETED = 4
    FAILED = 5
    TIMEOUT = 6
    HELD = 7
    MISSING = 8

    @property
    def terminal(self) -> bool:
        return self in (JobState.CANCELLED, JobState.COMPLETED, JobState.FAILED,
                        JobState.TIMEOUT, JobState.MISSING)


@dataclass
class JobStatus:
    """One job's state; ``stdout_path``/``stderr_path`` are the block's own output files
    (on the channel's host) so a failure can be explained with the block's words."""

    state: JobState
    message: Optional[str] = None
    exit_code: Optional[int] = None
    stdout_path: Optional[str] = None
    stderr_path: Optional[str] = None

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def stdout(self) -> Optional[str]:
        """The block's standard output (Parsl's ``JobStatus.stdout``), if its file is readable
        here; None otherwise (no file known, or on another host's file system)."""
        return _read_text(self.stdout_path)

    @property
    def stderr(self) -> Optional[str]:
        """The block's standard error, like :attr:`stdout`."""
        return _read_text(self.stderr_path)


def _read_text(path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


def walltime_to_seconds(walltime: str) -> int:
    """``"HH:MM:SS"`` (or ``"D-HH:MM:SS"``) as seconds.

    Raises:
        ConfigurationError: the text is not in that form.
    """
    match = _WALLTIME.match(str(walltime).strip())
    if not match:
        raise ConfigurationError(
            f"walltime {walltime!r} is not of the form HH:MM:SS (e.g. walltime='01:30:00')")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class ExecutionProvider(ABC):
    """Base of all providers, with Parsl's options.

    Args:
        init_blocks: blocks started when the executor starts.
        min_blocks / max_blocks: bounds the scaling strategy keeps to.
        nodes_per_block: nodes each block asks for.
        parallelism: ratio of provisioned worker slots to outstanding tasks (1: a slot per
            task; near 0: as few blocks as min_blocks allows).
        walltime: time limit of each block, ``HH:MM:SS``.
        worker_init: shell text run before the workers start (``module load ...``).
        scheduler_options: lines added verbatim to the submit script's header.
        launcher: wraps the worker command so it starts on every node; default
            :class:`~celeriac.providers.launchers.SingleNodeLauncher`.
        channel: where batch commands run; default
            :class:`~celeriac.providers.channels.LocalChannel`.
        cmd_timeout: seconds a batch command may take before it counts as failed.

    Raises:
        ConfigurationError: an option cannot work (negative blocks, bad walltime, ...).
    """

    label = "provider"

    def __init__(self, *, init_blocks: int = 1, min_blocks: int = 0, max_blocks: int = 1,
                 nodes_per_block: int = 1, parallelism: float = 1.0, worker_init: str = "",
                 walltime: str = "00:10:00", scheduler_options: str = "", launcher=None,
                 channel=None, cmd_timeout: float = 10):
        launcher = SingleNodeLauncher() if launcher is None else launcher
        channel = LocalChannel() if channel is None else channel
        self.init_blocks = init_blocks
        self.min_blocks = min_blocks
        self.max_blocks = max_blocks
        self.nodes_per_block = nodes_per_block
        self.parallelism = parallelism
        self.worker_init = worker_init
        self.walltime = walltime
        self.scheduler_options = scheduler_options
        self.launcher = launcher
        self.channel = channel
        self.cmd_timeout = cmd_timeout
        #: where submit scripts are written on this machine (the executor sets it)
        self.script_dir: Optional[str] = None
        self.check_options()

    #: scheduler-specific sizes a subclass may have: each must be a number > 0, or None
    _SIZES = ("cores_per_node", "mem_per_node", "cpus_per_node", "cores_per_block",
              "cores_per_slot", "mem_per_slot")

    def check_options(self) -> None:
        """Check every option in one place (the base's, and a subclass's sizes once set;
        the executor calls this again when it is given the provider).

        Raises:
            ConfigurationError: naming each option with an impossible value.
        """
        checks = OptionChecks(type(self).__name__)
        for name in ("init_blocks", "min_blocks", "max_blocks"):
            checks.integer(name, getattr(self, name))
        blocks = [getattr(self, n) for n in ("init_blocks", "min_blocks", "max_blocks")]
        if not checks.problems and blocks[1] > blocks[2]:
            checks.problem(f"min_blocks ({blocks[1]}) is larger than max_blocks ({blocks[2]})")
        if not checks.problems and blocks[0] > blocks[2]:
            checks.problem(f"init_blocks ({blocks[0]}) is larger than max_blocks ({blocks[2]}), "
                           "the most blocks that may run at once: lower init_blocks or raise "
                           "max_blocks")
        checks.integer("nodes_per_block", self.nodes_per_block, minimum=1)
        checks.number("parallelism", self.parallelism, meaning="slots per outstanding task")
        checks.seconds("cmd_timeout", self.cmd_timeout)
        checks.kind("worker_init", self.worker_init, str, "shell text")
        checks.kind("scheduler_options", self.scheduler_options, str, "shell text")
        for name in self._SIZES:
            checks.number(name, getattr(self, name, None), above=True, none_ok=True)
        if not isinstance(self.launcher, Launcher):
            checks.problem(f"launcher must be a Launcher (e.g. SingleNodeLauncher()), "
                           f"not {self.launcher!r}")
        if not isinstance(self.channel, Channel):
            checks.problem(f"channel must be a Channel (e.g. LocalChannel()), "
                           f"not {self.channel!r}")
        checks.done()
        walltime_to_seconds(self.walltime)

    @abstractmethod
    def submit(self, command: str, tasks_per_node: int, job_name: str = "celeriac") -> str:
        """Start one block running ``command`` ``tasks_per_node`` times on each node.

        Returns:
            The job id.

        Raises:
            ScaleOutFailed: the block could not be started (quotes the scheduler).
        """

    @abstractmethod
    def status(self, job_ids: list) -> list:
        """A :class:`JobStatus` for each id, in order (``MISSING`` for ids never submitted
        here). Raises ProviderError when the scheduler cannot be asked."""

    @abstractmethod
    def cancel(self, job_ids: list) -> list:
        """Give the jobs back; a bool per id saying whether it was cancelled (False for
        unknown or already finished ids, never an error)."""

    @property
    def status_polling_interval(self) -> float:
        """Seconds between status polls that the scheduler will tolerate."""
        return 60.0

    def __repr__(self):
        return f"{type(self).__name__}(nodes_per_block={self.nodes_per_block}, " \
               f"walltime={self.walltime!r}, launcher={self.launcher!r}, " \
               f"channel={self.channel!r})"
