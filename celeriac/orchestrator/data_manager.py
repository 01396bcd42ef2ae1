"""DataManager: finds the Files of an app call and has the executor's providers stage them.

It runs in the DFK's ``submit``. A provider whose transfers run in the app's task (the
default) adds them to the call's :class:`~celeriac.staging.intask.StagePlan`, which the
worker carries out around the app. A provider whose transfers run as tasks of their own
(on the app's executor, or in the orchestrator) gets a stage-in task whose DataFuture
replaces the File argument, and a stage-out task that depends on the app, whose completion
resolves the output's DataFuture.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional

from celeriac.errors import ConfigurationError, StagingError, hide_password
from celeriac.orchestrator.futures import DataFuture
from celeriac.staging.files import File
from celeriac.staging.intask import STAGE_IN, STAGE_OUT, StagePlan, Transfer, make_parent

logger = logging.getLogger(__name__)

_FILE_TYPES = (File, DataFuture)

INHIBIT = "_parsl_staging_inhibit"   # Parsl's keyword: this call is itself a staging task


class DataManager:
    """Stages the Files of app calls for one DFK (``dm.dfk``)."""

    def __init__(self, dfk, internal_label: str):
        self.dfk = dfk
        self._internal = internal_label
        from celeriac.staging import NoOpFileStaging, default_staging
        self._default = list(default_staging)
        self._noop = NoOpFileStaging()
        self._calls = threading.local()  # .plan: the StagePlan of the call being staged here

    def providers(self, executor: str) -> list:
        storage = getattr(self.dfk._executor(executor), "storage_access", None)
        return self._default if storage is None else storage

    def working_dir(self, executor: str, provider) -> Optional[str]:
        """The executor's ``working_dir``; for transfers in the orchestrator without one, an
        absolute directory under the run directory (so the app's worker finds it on a shared
        or local file system)."""
        working_dir = getattr(self.dfk._executor(executor), "working_dir", None)
        if working_dir is None and getattr(provider, "transfers_run_on", "") == "orchestrator":
            working_dir = os.path.join(self.dfk.run_dir, "staging")
        return working_dir

    def _provider(self, executor: str, file: File, direction: str):
        can = "can_stage_in" if direction == "in" else "can_stage_out"
        providers = self.providers(executor)
        for provider in providers:
            if getattr(provider, can)(file):
                return provider
        if file.scheme == "file":  # unlike Parsl, a local file nobody takes stays where it is
            return self._noop
        raise ConfigurationError(
            f"executor {executor!r} cannot stage {direction} {file.url!r}: none of its "
            f"storage_access providers {providers} takes {file.scheme}: files; add one that "
            "does to the executor's storage_access=[...]")

    @staticmethod
    def involved(args: tuple, kwargs: dict) -> bool:
        """Whether a call has any File (or DataFuture of one) to stage: the quick test that
        spares calls without files everything else here."""
        for value in args:
            if isinstance(value, _FILE_TYPES):
                return True
        for key, value in kwargs.items():
            if isinstance(value, _FILE_TYPES):
                return True
            if key in ("inputs", "outputs") and value:
                return True
        return False

    def check(self, executor: str, args: tuple, kwargs: dict) -> None:
        """Raise ConfigurationError, before anything is submitted, for a File of this call
        that no provider of ``executor`` stages."""
        def file_of(value):
            if isinstance(value, DataFuture):
                value = value.file_obj
            return value if isinstance(value, File) else None

        inputs = kwargs.get("inputs")
        found = [(a, "in") for a in args] + [
            (v, "in") for key, v in kwargs.items()
            if key not in ("stdout", "stderr", "outputs", "inputs")]
        if isinstance(inputs, (list, tuple)):
            found += [(v, "in") for v in inputs]
        found += [(v, "out") for v in kwargs.get("outputs", ()) or ()]
        found += [(kwargs.get(stream), "out") for stream in ("stdout", "stderr")]
        for value, direction in found:
            file = file_of(value)
            if file is not None:
                self._provider(executor, file, direction)

    # ------------------------------------------------------------------ inputs

    def stage_inputs(self, executor: str, args: tuple, kwargs: dict):
        """Stage in the Files (and DataFutures of Files) in ``args``, keyword arguments and
        ``inputs=``. Returns ``(args, kwargs, plan, stage_in_futures)``: ``plan`` is the
        call's in-task transfers, which :meth:`stage_outputs` adds to."""
        futures = []
        plan = StagePlan()
        self._calls.plan = plan  # where Staging.stage_in's in-task transfers go (transfer)

        def one(value):
            if isinstance(value, DataFuture) and isinstance(value.file_obj, File):
                file, parent = value.file_obj.cleancopy(), value
            elif isinstance(value, File):
                file, parent = value.cleancopy(), None
            else:
                return value
            provider = self._provider(executor, file, "in")
            staged = provider.stage_in(self, executor, file, parent)  # in-task: None
            plan.wrap(provider.replace_task(self, executor, file, plan.current()))
            if staged is not None:
                futures.append(staged)
                return staged
            return file if parent is None else value

        try:
            args = tuple(one(a) for a in args)
            for key, value in list(kwargs.items()):
                if key in ("stdout", "stderr", "outputs"):
                    continue
                if key == "inputs" and isinstance(value, (list, tuple)):
                    kwargs[key] = type(value)(one(v) for v in value)
                else:
                    kwargs[key] = one(value)
        finally:
            self._calls.plan = None
        return args, kwargs, plan, futures

    # ------------------------------------------------------------------ outputs

    def stage_outputs(self, executor: str, plan: StagePlan, kwargs: dict, app_fu, tid: int):
        """Stage out ``outputs=`` Files and ``stdout=``/``stderr=`` Files: their copies go to
        the app (with ``local_path`` set), their DataFutures resolve once staged out.

        Returns ``(output DataFutures, {stream: DataFuture})``."""
        def one(file):
            copy = file.cleancopy()
            provider = self._provider(executor, copy, "out")
            done = provider.stage_out(self, executor, copy, app_fu)  # in-task: None
            plan.wrap(provider.replace_task_stage_out(self, executor, copy, plan.current()))
            if done is None:
                return copy if copy.local_path is not None else file, DataFuture(app_fu, file, tid)
            return copy, DataFuture(done, file, tid)

        outputs = []
        staged = []
        self._calls.plan = plan
        try:
            for f in kwargs.get("outputs", ()) or ():
                if isinstance(f, File):
                    given, fut = one(f)
                else:
                    given, fut = f, DataFuture(app_fu, f, tid)
                staged.append(given)
                outputs.append(fut)
            streams = {}
            for stream in ("stdout", "stderr"):
                if isinstance(kwargs.get(stream), File):
                    kwargs[stream], streams[stream] = one(kwargs[stream])
        finally:
            self._calls.plan = None
        if "outputs" in kwargs:
            kwargs["outputs"] = type(kwargs["outputs"])(staged) if isinstance(
                kwargs["outputs"], (list, tuple)) else staged
        return tuple(outputs), streams

    # ------------------------------------------------------------------ transfer tasks

    def transfer(self, provider, direction: str, executor: str, file: File, parent):
        """Arrange one transfer of ``provider`` (see :class:`Staging`). In the app's task
        (``transfers_run_on="app"``, while a call is being staged): add it to the call's plan
        and return None. Otherwise submit it as a task: a stage-in returns the DataFuture of
        ``file``, a stage-out the task's AppFuture."""
        working_dir = self.working_dir(executor, provider)
        name = STAGE_IN if direction == "in" else STAGE_OUT
        plan = getattr(self._calls, "plan", None)
        if plan is not None and getattr(provider, "transfers_run_on", "") == "app":
            (plan.ins if direction == "in" else plan.outs).append(
                Transfer(provider, file, working_dir))
            logger.info("%s: %s in the app's task on %s, at %s", name,
                        hide_password(file.url), executor, file.local_path)
            return None
        label = self._internal if provider.transfers_run_on == "orchestrator" else executor
        if direction == "out" and working_dir:  # the app writes there: on a local or shared fs
            try:                                # this makes it; elsewhere the worker's must exist
                os.makedirs(os.path.dirname(os.path.abspath(file.local_path)), exist_ok=True)
            except OSError as e:
                logger.debug("cannot make %s here (%s): the worker's must exist", working_dir, e)
        task = run_transfer_in if direction == "in" else run_transfer_out
        fut = self.dfk.submit(task, (provider, file, working_dir, parent), executors=[label],
                              func_name=name, app_kwargs={INHIBIT: True})
        logger.info("task %s %s: %s on %s", fut.tid, name, hide_password(file.url), label)
        return DataFuture(fut, file, fut.tid) if direction == "in" else fut


def run_transfer_in(provider, file, working_dir, parent=None, _parsl_staging_inhibit=True):
    """The body of a stage-in task: ``provider.transfer_in``, any failure a StagingError."""
    make_parent(file)
    _transfer(provider.transfer_in, file, working_dir)
    return file


def run_transfer_out(provider, file, working_dir, app_result=None,
                     _parsl_staging_inhibit=True):
    """The body of a stage-out task (it runs once the app succeeded)."""
    if not os.path.exists(file.local_path):
        raise StagingError(file.url, f"the app did not write {file.local_path} "
                           f"(on {os.uname().nodename})")
    _transfer(provider.transfer_out, file, working_dir)
    return file


def _transfer(method, file, working_dir) -> None:
    try:
        method(file, working_dir)
    except StagingError:
        raise
    except Exception as e:
        raise StagingError(file.url, f"{type(e).__name__}: {e}") from None
