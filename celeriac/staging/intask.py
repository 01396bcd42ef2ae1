"""In-task staging: one app call's transfers, run by the worker around the app, in its task.

The DataManager (in the DFK) puts a :class:`StagePlan` in the call: the Files to stage in
before the app, the Files to stage out after it, and any wrapper a Parsl-style provider's
``replace_task`` made. The worker that runs the app (:func:`run_staged`) carries it out, so
the files land on the file system the app sees, and an output's DataFuture (which follows
the app's future) resolves only once its stage-out is done. A failed transfer raises
:class:`~celeriac.errors.StagingError` naming the URL and the cause; it fails the app's task.

Parsl-style wrappers are built around :data:`APP`, a stand-in for "run the app" that the
worker binds to the real call, never around the app's own function. So the function a run
sends (and caches, pickled once) stays the app's, however many wrappers its calls get.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import os
import socket
import time
import uuid
from typing import Any, Callable, Optional

from celeriac.errors import StagingError, hide_password

__all__ = ["STAGE_IN", "STAGE_OUT", "APP", "Transfer", "StagePlan", "run_staged", "make_parent"]

logger = logging.getLogger(__name__)

STAGE_IN = "_celeriac_stage_in"
STAGE_OUT = "_celeriac_stage_out"


@dataclasses.dataclass
class Transfer:
    """One file to move: ``provider.transfer_in``/``transfer_out`` of ``file``."""

    provider: Any
    file: Any                      # a File whose local_path is its path on the worker
    working_dir: Optional[str]


@dataclasses.dataclass
class StagePlan:
    """What the worker does around one app call (empty: nothing)."""

    ins: list = dataclasses.field(default_factory=list)
    outs: list = dataclasses.field(default_factory=list)
    wrapper: Optional[Callable] = None   # Parsl-style replace_task result, built around APP

    def __bool__(self) -> bool:
        return bool(self.ins or self.outs or self.wrapper is not None)

    def wrap(self, replaced: Optional[Callable]) -> None:
        """Keep what a provider's ``replace_task``/``replace_task_stage_out`` returned (None:
        no change) when it was given :meth:`current`."""
        if replaced is not None and replaced is not self.current():
            self.wrapper = replaced

    def current(self) -> Callable:
        """The function a provider's ``replace_task`` is to wrap now."""
        return APP if self.wrapper is None else self.wrapper


_running: contextvars.ContextVar = contextvars.ContextVar("celeriac_staged_app")


class _App:
    """Runs the app of the call being staged; what Parsl-style wrappers wrap."""

    def __call__(self, *args, **kwargs):
        try:
            run = _running.get()
        except LookupError:
            raise RuntimeError("celeriac.staging.intask.APP runs an app only inside a staged "
                               "call on its worker") from None
        return run(args, kwargs)

    def __reduce__(self):  # one object per process: pickled by name
        return "APP"

    def __repr__(self):
        return "<the staged app>"


APP = _App()


def run_staged(run: Callable, func: Callable, call, *extra):
    """Stage ``call.staging``'s inputs in, run ``run(func, call, *extra)`` (through the plan's
    wrapper if it has one), stage its outputs out, and return the app's result.

    Raises:
        StagingError: a transfer failed (the app did not run, or its outputs are not where
            they should be).
        whatever ``run`` raises for the app's own failure.
    """
    plan = call.staging
    for transfer in plan.outs:  # the app writes its outputs here, on this worker
        make_parent(transfer.file)
    for transfer in plan.ins:
        _transfer(STAGE_IN, transfer, call)
    call = _with_staged_inputs(call, plan.ins)
    if plan.wrapper is None:
        result = run(func, call, *extra)
    else:
        token = _running.set(lambda args, kwargs: run(
            func, dataclasses.replace(call, args=args, kwargs=kwargs), *extra))
        try:
            result = plan.wrapper(*call.args, **call.kwargs)
        finally:
            _running.reset(token)
    for transfer in plan.outs:
        if not os.path.exists(transfer.file.local_path):
            raise StagingError(transfer.file.url, f"the app did not write "
                               f"{transfer.file.local_path} (on {socket.gethostname()})")
        _transfer(STAGE_OUT, transfer, call)
    return result


def _transfer(name: str, transfer: Transfer, call) -> None:
    """One transfer, logged under ``name`` with the app's task id; any failure a
    StagingError naming the URL."""
    file = transfer.file
    method = transfer.provider.transfer_in if name == STAGE_IN else \
        transfer.provider.transfer_out
    if name == STAGE_IN:
        make_parent(file)
    start = time.monotonic()
    events = _TaskEvents(call, name, file)
    try:
        method(file, transfer.working_dir)
    except StagingError as e:
        logger.warning("task %s %s for %s: %s", call.tid, name, call.name, e)
        events.done(e)
        raise
    except Exception as e:
        logger.warning("task %s %s for %s: %s failed: %s: %s", call.tid, name, call.name,
                       hide_password(file.url), type(e).__name__, e)
        e = StagingError(file.url, f"{type(e).__name__}: {e}")
        events.done(e)
        raise e from None
    events.done(None)
    logger.info("task %s %s for %s: %s %s %s in %.2f s", call.tid, name, call.name,
                hide_password(file.url), "->" if name == STAGE_IN else "<-", file.local_path,
                time.monotonic() - start)


class _TaskEvents:
    """Celery task events for one transfer inside a Celery task, so Flower (and any event
    monitor) lists it as a task of its own, named ``_celeriac_stage_in``/``_out``, whose
    parent is the app's task. Outside a Celery worker (threads executor) it does nothing;
    an event that cannot be sent never fails the transfer."""

    def __init__(self, call, name: str, file):
        self.task = None
        try:
            from celery import current_task
            task = current_task
            if task is None or task.request.id is None or task.request.called_directly:
                return
        except Exception:
            return
        self.task, self.start = task, time.monotonic()
        self.uuid = f"{call.task_id}.{name}.{uuid.uuid4().hex[:8]}"
        self._send("task-received", name=name, args=repr((hide_password(file.url),)),
                   kwargs="{}", root_id=task.request.root_id or task.request.id,
                   parent_id=task.request.id, retries=0, eta=None, expires=None)
        self._send("task-started", pid=os.getpid())

    def done(self, failure: Optional[BaseException]) -> None:
        if self.task is None:
            return
        if failure is None:
            self._send("task-succeeded", result="None",
                       runtime=time.monotonic() - self.start)
        else:
            self._send("task-failed", exception=repr(failure), traceback="")

    def _send(self, kind: str, **fields) -> None:
        try:
            request = self.task.request
            with self.task.app.events.default_dispatcher(hostname=request.hostname) as d:
                d.send(kind, uuid=self.uuid, **fields)
        except Exception as e:  # monitoring only: the transfer goes on
            logger.debug("could not send the %s event of %s: %s", kind, self.uuid, e)
            self.task = None


def make_parent(file) -> None:
    """Make the directory ``file.local_path`` goes in (a StagingError if it cannot be)."""
    directory = os.path.dirname(os.path.abspath(file.local_path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise StagingError(file.url, f"cannot make directory {directory}: {e}") from None


def _with_staged_inputs(call, ins: list):
    """``call`` with each input File that came from an upstream DataFuture (so it arrived as
    that app's File, without a path here) replaced by its staged copy."""
    staged = {t.file.url: t.file for t in ins}
    if not staged:
        return call

    def swap(value):
        if getattr(value, "local_path", 0) is None and getattr(value, "url", None) in staged:
            return staged[value.url]
        return value

    kwargs = {key: swap(v) for key, v in call.kwargs.items()}
    if isinstance(kwargs.get("inputs"), (list, tuple)):
        kwargs["inputs"] = type(kwargs["inputs"])(swap(v) for v in kwargs["inputs"])
    return dataclasses.replace(call, args=tuple(swap(a) for a in call.args), kwargs=kwargs)
