"""Staging: the plug-in point that moves a File between its URL and the place an app uses it.

The contract is Parsl's, so a Parsl staging provider subclass ports by changing its import.
For each :class:`~celeriac.staging.files.File` an app call receives (in ``args``, keyword
arguments or ``inputs=``) the DFK asks the executor's ``storage_access`` providers in turn
``can_stage_in(file)``; the first that says yes stages it:

- ``stage_in(dm, executor, file, parent_fut)`` gets a fresh copy of the File that it may
  change (it sets ``file.local_path``, the path on the worker). It returns a ``DataFuture``
  that resolves to that copy once the file is in place (the app's task waits for it, and
  fails with its exception if it fails), or None when nothing has to happen first.
- ``replace_task(dm, executor, file, func)`` may return a function to run instead of the
  app's (the app wrapped in staging code), or None.

Outputs (``outputs=[File(...)]`` and ``stdout=``/``stderr=`` Files) go the same way through
``can_stage_out``, ``stage_out(dm, executor, file, app_fu)`` (which returns a Future that
completes when the file is at its destination, or None) and ``replace_task_stage_out``; the
output's DataFuture resolves from that Future. ``dm`` is the DFK's
:class:`~celeriac.orchestrator.data_manager.DataManager`: ``dm.dfk.executors[executor]
.working_dir`` and ``dm.stage_task(...)`` are there.

celeriac's own providers are simpler to write: override ``can_stage_in``/``can_stage_out``
and ``transfer_in(file, working_dir)`` / ``transfer_out(file, working_dir)``, which move the
bytes between ``file.url`` and ``file.local_path`` and raise
:class:`~celeriac.errors.StagingError` naming the URL and the cause. ``transfers_run_on``
says where they run:

- ``"app"`` (the default): inside the app's own task, on the worker that runs the app,
  before and after the call (:mod:`celeriac.staging.intask`), so no file system needs to be
  shared. A failed transfer fails the app's task; an output's DataFuture follows the app's.
- ``"executor"``: as a task of its own on the app's executor, named ``_celeriac_stage_in``
  / ``_celeriac_stage_out`` (Parsl's separate-task staging): a stage-in task the app
  depends on, a stage-out task that depends on the app. The node that runs it may not be
  the app's, so ``working_dir`` must be shared.
- ``"orchestrator"``: as such a task in the DFK's process (the files are on its side).
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import Callable, Optional

__all__ = ["Staging", "check_storage_options"]


class Staging:
    """Base of staging providers. The default stages nothing (both ``can_stage_*`` say no)."""

    #: where transfer_in/transfer_out run: "app" (in the app's task, on its worker),
    #: "executor" (a task of their own on the app's executor) or "orchestrator"
    transfers_run_on = "app"

    def can_stage_in(self, file) -> bool:
        """Whether this provider stages ``file`` in (usually decided by ``file.scheme``)."""
        return False

    def can_stage_out(self, file) -> bool:
        """Whether this provider stages ``file`` out."""
        return False

    def stage_in(self, dm, executor: str, file, parent_fut: Optional[Future]):
        """Prepare ``file`` (a fresh copy) for the app; return a DataFuture to wait for, or
        None. ``parent_fut`` is the DataFuture the app was given in place of a File, if any:
        a stage-in task must wait for it. (The DataManager stages in-task transfers itself;
        this submits ``transfer_in`` as a task of its own.)"""
        if type(self).transfer_in is Staging.transfer_in:
            return None
        file.local_path = self.local_path(dm.working_dir(executor, self), file)
        return dm.transfer(self, "in", executor, file, parent_fut)

    def stage_out(self, dm, executor: str, file, app_fu: Future) -> Optional[Future]:
        """Arrange for ``file`` (a fresh copy, given to the app) to be moved to its URL after
        ``app_fu`` succeeds; return a Future done when it is there, or None."""
        if type(self).transfer_out is Staging.transfer_out:
            return None
        file.local_path = self.local_path(dm.working_dir(executor, self), file)
        return dm.transfer(self, "out", executor, file, app_fu)

    def replace_task(self, dm, executor: str, file, func: Callable) -> Optional[Callable]:
        """A function to run in place of ``func`` for this stage-in, or None."""
        return None

    def replace_task_stage_out(self, dm, executor: str, file,
                               func: Callable) -> Optional[Callable]:
        """A function to run in place of ``func`` for this stage-out, or None."""
        return None

    # ---------------------------------------------------------------- celeriac's own hooks

    def local_path(self, working_dir: Optional[str], file) -> str:
        """Where ``file`` lives for the app: ``working_dir/filename``, or ``filename``
        (relative to the worker's current directory) without a working_dir, as in Parsl."""
        return os.path.join(working_dir, file.filename) if working_dir else file.filename

    def transfer_in(self, file, working_dir: Optional[str]) -> None:
        """Copy ``file.url`` to ``file.local_path``. Raises StagingError."""
        raise NotImplementedError

    def transfer_out(self, file, working_dir: Optional[str]) -> None:
        """Copy ``file.local_path`` to ``file.url``. Raises StagingError."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


def check_storage_options(owner: str, storage_access, working_dir):
    """An executor's ``storage_access`` (None: the default list) and ``working_dir``, checked.

    Raises:
        ConfigurationError: storage_access is not a list of staging providers, or
            working_dir is not a path.
    """
    from celeriac.errors import ConfigurationError
    if storage_access is not None:
        if not isinstance(storage_access, (list, tuple)) or not all(
                hasattr(p, "can_stage_in") and hasattr(p, "can_stage_out")
                for p in storage_access):
            raise ConfigurationError(
                f"{owner}: storage_access must be a list of staging providers (Staging "
                f"subclasses such as HTTPStaging()), not {storage_access!r}")
        storage_access = list(storage_access)
    if working_dir is not None and not isinstance(working_dir, (str, os.PathLike)):
        raise ConfigurationError(f"{owner}: working_dir must be a path, not {working_dir!r}")
    return storage_access, None if working_dir is None else os.fspath(working_dir)
