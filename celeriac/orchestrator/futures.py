"""AppFuture and DataFuture: what calling an app gives back.

Both are ``concurrent.futures.Future`` objects, generic in their result type for type checkers
(``AppFuture[int]``), and awaitable in asyncio code (``await fut``).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Optional, TypeVar

T = TypeVar("T")


class _Awaitable:
    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self).__await__()


class AppFuture(_Awaitable, Future[T]):
    """The future of one app call: a ``concurrent.futures.Future`` with Parsl's extras.

    ``fut['key']`` and ``fut.attr`` return new futures of the item/attribute of the result,
    without blocking; they are dependencies like any other future. ``await fut`` waits
    without blocking an asyncio event loop.
    """

    def __init__(self, task_record):
        super().__init__()
        self.task_record = task_record
        self._outputs = []

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
    def outputs(self):
        """DataFutures for the ``outputs=[File(...)]`` of this call."""
        return self._outputs

    def task_status(self) -> str:
        """The task's state name, as in Parsl (``pending``, ``launched``, ``exec_done``, ...)."""
        return self.task_record.status.name

    def cancel(self) -> bool:
        """Refuse, returning False: the DFK owns this task and will still complete it.

        ``Future.cancel`` would mark a pending future cancelled while its task runs on, so the
        DFK could not deliver the result and dependents would wait forever.
        """
        return False

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


class DataFuture(_Awaitable, Future):
    """A future for a File an app produces: resolves to the File when the app succeeds."""

    def __init__(self, app_fut: Future, file_obj, tid: Optional[int] = None):
        super().__init__()
        self.app_fut = app_fut
        self.file_obj = file_obj
        self._tid = tid
        app_fut.add_done_callback(self._parent_done)

    def _parent_done(self, fut: Future) -> None:
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
