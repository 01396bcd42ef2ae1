"""One call of an app as it travels to a worker, and its failure as it travels back.

Whatever the app raises is its task's failure, even ``SystemExit`` or ``KeyboardInterrupt``:
those become :class:`~celeriac.errors.AppExited`, an ordinary exception, so they never end
the process that ran the app.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Optional

from celeriac.errors import AppExited, SerializationError
from celeriac.wire import payload


@dataclass
class Call:
    """One try of one app call, as a worker needs it (the function travels separately)."""

    task_id: str                 # unique per try; the Celery task id
    tid: int                     # the DFK's task id
    name: str                    # the app's name, shown in Flower and logs
    kind: str                    # 'python' or 'bash'
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    walltime: Optional[float] = None
    stdout: object = None        # bash apps: path, (path, mode) or None
    stderr: object = None
    outputs: tuple = ()          # bash apps: Files that must exist afterwards
    staging: object = None       # a celeriac.staging.intask.StagePlan: transfers around the app
    after: Optional[int] = None  # a chained call: the tid of the call before it in its message,
                                 # whose result its Earlier markers stand for

    def filled(self, value) -> "Call":
        """This chained call, its :class:`Earlier` markers replaced by ``value`` (where Parsl's
        shallow rule finds futures: arguments, keyword values, items of inputs), in place."""
        def fill(v):
            return value if type(v) is Earlier else v
        kwargs = {k: fill(v) for k, v in self.kwargs.items()} if self.kwargs else self.kwargs
        inputs = kwargs.get("inputs")
        if isinstance(inputs, (list, tuple)):
            kwargs["inputs"] = type(inputs)(fill(v) for v in inputs)
        self.args, self.kwargs, self.after = tuple(fill(v) for v in self.args), kwargs, None
        return self


class Earlier:
    """Stands, in a chained call's arguments, for the result of the call before it in the
    same message (the future the orchestrator would have waited for)."""

    __slots__ = ("tid",)

    def __init__(self, tid: int):
        self.tid = tid

    def __reduce__(self):
        return Earlier, (self.tid,)

    def __eq__(self, other):
        return type(other) is Earlier and other.tid == self.tid

    def __hash__(self):
        return hash((Earlier, self.tid))

    def __repr__(self):
        return f"<result of task {self.tid}>"


@dataclass
class Failure:
    """An exception from an app, with its traceback as text (tracebacks don't pickle)."""

    exception: BaseException
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException, skip_frames: int = 0, app_name: str = "") -> "Failure":
        """The failure of app ``app_name`` that raised ``exc`` (its traceback kept as text).

        An exception that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, ...)
        is replaced by :class:`AppExited` saying what the app did.
        """
        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        if not isinstance(exc, Exception):
            exc = exited(exc, app_name)
        return cls(exc, text)

    def portable(self) -> "Failure":
        """This failure, with the exception replaced by a description if it won't pickle."""
        try:
            payload.dumps(self.exception)
            return self
        except SerializationError:
            exc = self.exception
            return Failure(SerializationError(
                f"the app raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}, "
                "which could not be pickled to send back; its traceback is attached"),
                self.traceback)


def exited(exc: BaseException, app_name: str) -> AppExited:
    """An :class:`AppExited` describing ``exc``, which is not an ``Exception``."""
    if isinstance(exc, SystemExit):
        code = exc.code
        what = "called sys.exit()" if code is None else f"called sys.exit({code!r})"
        return AppExited(app_name, what, code if isinstance(code, (int, str)) else None)
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = str(exc)
    except Exception:
        text = ""
    return AppExited(app_name, f"raised {name}: {text}" if text else f"raised {name}")


class AppFailed(Exception):
    """Raised inside a worker to carry a :class:`Failure` out of :func:`run_call`."""

    def __init__(self, failure: Failure):
        super().__init__(failure.exception)
        self.failure = failure
