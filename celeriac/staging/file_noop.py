"""NoOpFileStaging: local files (``file://`` or a plain path) are used where they are."""

from __future__ import annotations

from celeriac.staging.base import Staging

__all__ = ["NoOpFileStaging"]


class NoOpFileStaging(Staging):
    """Takes ``file:`` Files and copies nothing: the app opens ``file.path`` itself, which
    suits a worker that shares the orchestrator's file system (Parsl's default for files)."""

    def can_stage_in(self, file) -> bool:
        return file.scheme == "file"

    def can_stage_out(self, file) -> bool:
        return file.scheme == "file"
