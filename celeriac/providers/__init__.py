"""Providers: where blocks of workers come from."""

from celeriac.providers.base import ExecutionProvider, JobState, JobStatus
from celeriac.providers.local import LocalProvider

__all__ = ["ExecutionProvider", "JobState", "JobStatus", "LocalProvider"]
