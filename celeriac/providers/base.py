"""ExecutionProvider: gets blocks of resources from a batch system (or this machine).

The contract, as in Parsl: :meth:`submit` asks for one block that runs ``command`` and returns
a job id; :meth:`status` says where each job is; :meth:`cancel` gives jobs back. A provider
never talks to Celery: the executor builds the worker command and counts capacity.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional


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
    state: JobState
    message: Optional[str] = None
    exit_code: Optional[int] = None
    stdout_path: Optional[str] = None
    stderr_path: Optional[str] = None

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class ExecutionProvider(ABC):
    """Base of all providers: blocks (init/min/max), nodes per block, worker_init."""

    label = "provider"

    def __init__(self, *, init_blocks: int = 1, min_blocks: int = 0, max_blocks: int = 1,
                 nodes_per_block: int = 1, parallelism: float = 1.0, worker_init: str = "",
                 walltime: str = "00:10:00"):
        self.init_blocks = init_blocks
        self.min_blocks = min_blocks
        self.max_blocks = max_blocks
        self.nodes_per_block = nodes_per_block
        self.parallelism = parallelism
        self.worker_init = worker_init
        self.walltime = walltime
        self.script_dir: Optional[str] = None

    @abstractmethod
    def submit(self, command: str, tasks_per_node: int, job_name: str = "celeriac") -> str:
        """Start one block running ``command``; return its job id."""

    @abstractmethod
    def status(self, job_ids: list) -> list:
        """A JobStatus for each id, in order."""

    @abstractmethod
    def cancel(self, job_ids: list) -> list:
        """Give the jobs back; a bool per id saying whether it was cancelled."""
