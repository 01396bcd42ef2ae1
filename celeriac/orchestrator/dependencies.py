"""Finding futures in an app call's arguments, and replacing them by their values (no I/O)."""

from __future__ import annotations

from concurrent.futures import CancelledError, Future


def find_futures(args, kwargs) -> list:
    """The futures an app call depends on: in args, kwarg values, and ``inputs=[...]``."""
    found = [a for a in args if isinstance(a, Future)]
    for key, value in kwargs.items():
        if isinstance(value, Future):
            found.append(value)
        elif key == "inputs" and isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, Future))
    return found


def resolve(args, kwargs):
    """Replace every done future by its value.

    Returns:
        ``(args, kwargs, failures)`` where ``failures`` is ``[(exception, description), ...]``
        for the futures that failed (their places keep the future), each described as
        Parsl does (:func:`describe`).
    """
    failures = []

    def value(v):
        if isinstance(v, Future):
            # a cancelled future has no exception() to give: it raises CancelledError
            exc = CancelledError() if v.cancelled() else v.exception()
            if exc is not None:
                failures.append((exc, describe(v)))
                return v
            return v.result()
        return v

    new_args = tuple(value(a) for a in args)
    new_kwargs = {}
    for key, v in kwargs.items():
        if key == "inputs" and isinstance(v, (list, tuple)):
            new_kwargs[key] = type(v)(value(i) for i in v)
        else:
            new_kwargs[key] = value(v)
    return new_args, new_kwargs, failures


def describe(fut: Future) -> str:
    """A failed dependency as Parsl names it: ``task N``, ``DataFuture from task N``, or the
    future's repr (a plain ``concurrent.futures.Future``)."""
    from celeriac.orchestrator.futures import AppFuture, DataFuture
    if isinstance(fut, AppFuture):
        return f"task {fut.tid}"
    if isinstance(fut, DataFuture) and fut.tid is not None:
        return f"DataFuture from task {fut.tid}"
    return repr(fut)


def root_cause(exc: BaseException) -> BaseException:
    """The failure at the bottom of a chain of DependencyErrors."""
    from celeriac.errors import DependencyError
    seen = set()
    while isinstance(exc, DependencyError) and exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return exc
