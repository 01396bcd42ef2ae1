"""AppFuture and DataFuture: what calling an app gives back.

Both are ``concurrent.futures.Future`` objects, generic in their result type for type checkers
(``AppFuture[int]``), and awaitable in asyncio code (``await fut``).

A finished AppFuture costs its result plus a few hundred bytes, however long the user holds
it: on completion it lets go of the task record (and with it the function, the arguments,
the retry state, the DFK), of its done-callbacks (which hold the dependents' records), and of
the ``threading.Condition`` that only waiting needs; it keeps a :class:`FinishedTask`
summary of the record.
"""

from __future__ import annotations

import _thread
import threading
import weakref
from concurrent.futures import Future
from concurrent.futures._base import PENDING
from types import MappingProxyType
from typing import Optional, TypeVar

from celeriac.orchestrator import callbacks

T = TypeVar("T")

_NO_KWARGS = MappingProxyType({})


class _LeanCondition(_thread.RLock):
    """What ``Future`` needs of a ``threading.Condition``, in one object of ~80 bytes instead
    of nine (~1.5 KB).

    It is the RLock a Condition would hold (and is never swapped, so code that takes
    ``future._condition`` twice, as ``concurrent.futures.wait`` does, stays right); the real
    Condition over it, with its waiter deque, is made only when a thread waits, and dropped
    once the future has finished (nobody waits on a finished future).
    """

    __slots__ = ("_cond",)

    def __init__(self):
        self._cond = None

    def wait(self, timeout=None):  # called with the lock held, as with a Condition
        if self._cond is None:
            self._cond = threading.Condition(self)
        return self._cond.wait(timeout)

    def notify_all(self):          # likewise
        if self._cond is not None:
            self._cond.notify_all()

    def notify(self, n=1):
        if self._cond is not None:
            self._cond.notify(n)


class LeanFuture(Future[T]):
    """A ``concurrent.futures.Future`` made without the ``threading.Condition`` that
    ``Future.__init__`` makes (eight objects: the Condition, its RLock, its waiters' deque and
    five bound methods), with a :class:`_LeanCondition` (one) instead.

    Each task in flight has two futures (its AppFuture and its executor's), and the cycle
    collector walks every object they hold at each collection while they are alive: a long
    run paid for those walks at every task.
    """

    def __init__(self):  # Future.__init__'s fields (pinned by a test), but the lock
        self._condition = _LeanCondition()
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []


class FinishedTask:
    """What a finished task's future keeps of its task record: its identity, outcome
    counters and log paths (``fut.task_record`` after completion). Read like a record:
    ``fut.task_record.status``, ``fut.task_record['fail_count']``."""

    __slots__ = ("id", "func_name", "kind", "executor", "status", "try_id",
                 "fail_count", "fail_history", "lost_count", "hashsum", "time_invoked",
                 "time_returned", "kwargs", "_app_fu", "dfk")

    def __init__(self, record):
        self.id = record.id
        self.func_name = record.func_name
        self.kind = record.kind
        self.executor = record.executor
        self.status = record.status
        self.try_id = record.try_id
        self.fail_count = record.fail_count
        self.fail_history = tuple(record.fail_history)
        self.lost_count = record.lost_count
        self.hashsum = record.hashsum
        self.time_invoked = record.time_invoked
        self.time_returned = record.time_returned
        streams = {k: v for k, v in record.kwargs.items() if k in ("stdout", "stderr")}
        self.kwargs = MappingProxyType(streams) if streams else _NO_KWARGS
        # Held weakly: the future holds this summary, and a cycle between them would make
        # every finished future garbage that only the cycle collector frees (a long run
        # paid for collecting a million of them).
        self._app_fu = None if record.app_fu is None else weakref.ref(record.app_fu)
        self.dfk = record.dfk            # fut['key'] and fut.attr still make new futures

    @property
    def app_fu(self):
        """The task's future, while anything holds it."""
        return None if self._app_fu is None else self._app_fu()

    def __getitem__(self, key):
        return getattr(self, key)

    def __repr__(self):
        return f"<FinishedTask {self.id} {self.func_name} {self.status.name}>"


class _Awaitable:
    """What AppFuture and DataFuture add to ``Future``: ``await`` and callbacks that may wait."""

    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self).__await__()

    def add_done_callback(self, fn) -> None:
        """Call ``fn(future)`` once the future is done (at once if it is): on celeriac's
        callback thread, never on the thread that handles the run's events, so ``fn`` may
        wait for other futures (see :mod:`celeriac.orchestrator.callbacks`)."""
        if self.done():
            Future.add_done_callback(self, fn)
        else:
            Future.add_done_callback(self, callbacks.deferred(fn))

    def on_done(self, fn) -> None:
        """celeriac's own callbacks: called in the thread that completes the future."""
        Future.add_done_callback(self, fn)


class AppFuture(_Awaitable, LeanFuture[T]):
    """The future of one app call: a ``concurrent.futures.Future`` with Parsl's extras.

    ``fut['key']`` and ``fut.attr`` return new futures of the item/attribute of the result,
    without blocking; they are dependencies like any other future. ``await fut`` waits
    without blocking an asyncio event loop.
    """

    def __init__(self, task_record):
        super().__init__()
        self.task_record = task_record
        self._outputs = ()

    def set_result(self, result) -> None:
        super().set_result(result)
        self._let_go()

    def set_exception(self, exception) -> None:
        super().set_exception(exception)
        self._let_go()

    def _let_go(self) -> None:
        """Keep only what a finished future needs (see the module's docstring)."""
        with self._condition:
            self._condition._cond = None     # its waiters were notified and hold it
            # add_done_callback on a finished future calls at once: nothing is appended
            self._done_callbacks = ()
            record = self.task_record
            if not isinstance(record, FinishedTask):
                self.task_record = FinishedTask(record)

    @property
    def tid(self) -> int:
        return self.task_record.id

    @property
    def stdout(self) -> Optional[str]:
        return self.task_record.kwargs.get("stdout")

    @property
    def stderr(self) -> Optional[str]:
        return self.task_record.kwargs.get("stderr")

    @property
    def outputs(self) -> list:
        """DataFutures for the ``outputs=[File(...)]`` of this call."""
        return list(self._outputs)

    def task_status(self) -> str:
        """The task's state name, as in Parsl (``pending``, ``launched``, ``exec_done``, ...)."""
        return self.task_record.status.name

    def cancel(self) -> bool:
        """Cancel the task: one still waiting never runs; one that is queued is dropped, and
        one that is running is stopped (its worker process is killed). Its dependents fail
        with ``DependencyError``; ``result()`` raises ``CancelledError``.

        Returns:
            True if the future is now cancelled; False if the task had already finished.
        """
        if self.done():
            return self.cancelled()
        return self.task_record.dfk.cancel(self)

    def mark_cancelled(self) -> None:
        """Put the future in the cancelled state (the DFK's side of :meth:`cancel`)."""
        Future.cancel(self)
        self._let_go()

    def __getitem__(self, key):
        return self.task_record.dfk.deferred(_getitem, self, key)

    def __getattr__(self, name):
        # Private and dunder names keep their ordinary meaning (copy, pickle, iteration...).
        if name.startswith("_"):
            raise AttributeError(name)
        return self.task_record.dfk.deferred(getattr, self, name)

    def __repr__(self):
        return f"<AppFuture tid={self.tid} app={self.task_record.func_name} state={self._state}>"


def _getitem(obj, key):
    return obj[key]


class DataFuture(_Awaitable, LeanFuture):
    """A future for a File an app produces: resolves to the File when the app succeeds."""

    def __init__(self, app_fut: Future, file_obj, tid: Optional[int] = None):
        super().__init__()
        self.app_fut = app_fut
        self.file_obj = file_obj
        self._tid = tid
        getattr(app_fut, "on_done", app_fut.add_done_callback)(self._parent_done)

    def _parent_done(self, fut: Future) -> None:
        if fut.cancelled():  # no file will come
            self.cancel()
            return
        exc = fut.exception()
        if exc is not None:
            self.set_exception(exc)
        else:
            self.set_result(self.file_obj)

    @property
    def tid(self):
        return self._tid

    @property
    def filepath(self):
        return self.file_obj.filepath

    @property
    def filename(self):
        return self.file_obj.filename

    def __repr__(self):
        return f"<DataFuture tid={self._tid} file={self.file_obj.url} state={self._state}>"
