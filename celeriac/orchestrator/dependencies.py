"""Finding futures in an app call's arguments, and replacing them by their values (no I/O).

By default (Parsl's shallow resolver) a call depends on the futures passed directly as an
argument, a keyword argument, or an item of ``inputs=[...]``. ``Config(dependency_resolver=
DEEP_DEPENDENCY_RESOLVER)`` also waits for futures inside lists, tuples, sets and dicts, and
any :class:`DependencyResolver` (Parsl's interface) can say where futures hide.
"""

from __future__ import annotations

from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from functools import singledispatch
from typing import Any, Callable, Sequence

__all__ = ["DependencyResolver", "SHALLOW_DEPENDENCY_RESOLVER", "DEEP_DEPENDENCY_RESOLVER",
           "deep_traverse_to_gather", "deep_traverse_to_unwrap"]


@dataclass(frozen=True)
class DependencyResolver:
    """Where an app call's futures are (Parsl's interface, so Parsl's resolvers port).

    Attributes:
        traverse_to_gather: ``f(argument) -> [futures it holds]``.
        traverse_to_unwrap: ``f(argument) -> the argument with those futures replaced by
            their results`` (raising a failed future's exception).
    """

    traverse_to_gather: Callable[[Any], Sequence[Future]]
    traverse_to_unwrap: Callable[[Any], Any]


def _shallow_gather(value) -> list:
    return [value] if isinstance(value, Future) else []


def _shallow_unwrap(value):
    return value.result() if isinstance(value, Future) else value


@singledispatch
def deep_traverse_to_gather(value) -> list:
    """The futures in ``value``, looking inside lists, tuples, sets and dicts (register more
    container types with ``deep_traverse_to_gather.register``)."""
    return []


@singledispatch
def deep_traverse_to_unwrap(value):
    """``value`` with the futures in its lists, tuples, sets and dicts replaced by results."""
    return value


@deep_traverse_to_gather.register
def _(value: Future) -> list:
    return [value]


@deep_traverse_to_gather.register(list)
@deep_traverse_to_gather.register(tuple)
@deep_traverse_to_gather.register(set)
@deep_traverse_to_gather.register(frozenset)
def _(value) -> list:
    return [f for item in value for f in deep_traverse_to_gather(item)]


@deep_traverse_to_gather.register
def _(value: dict) -> list:
    return [f for kv in value.items() for item in kv for f in deep_traverse_to_gather(item)]


@deep_traverse_to_unwrap.register
def _(value: Future):
    return value.result()


@deep_traverse_to_unwrap.register(list)
@deep_traverse_to_unwrap.register(tuple)
@deep_traverse_to_unwrap.register(set)
@deep_traverse_to_unwrap.register(frozenset)
def _(value):
    return type(value)(deep_traverse_to_unwrap(item) for item in value)


@deep_traverse_to_unwrap.register
def _(value: dict):
    return type(value)((deep_traverse_to_unwrap(k), deep_traverse_to_unwrap(v))
                       for k, v in value.items())


SHALLOW_DEPENDENCY_RESOLVER = DependencyResolver(_shallow_gather, _shallow_unwrap)
DEEP_DEPENDENCY_RESOLVER = DependencyResolver(deep_traverse_to_gather, deep_traverse_to_unwrap)


def find_futures(args, kwargs, resolver: DependencyResolver | None = None) -> list:
    """The futures an app call depends on: in args, kwarg values, and ``inputs=[...]``."""
    if resolver is not None and resolver is not SHALLOW_DEPENDENCY_RESOLVER:
        gather = resolver.traverse_to_gather
        found = [f for a in args for f in gather(a)]
        for key, value in kwargs.items():
            if key == "inputs" and isinstance(value, (list, tuple)):
                found.extend(f for v in value for f in gather(v))
            else:
                found.extend(gather(value))
        return found
    found = [a for a in args if isinstance(a, Future)]
    for key, value in kwargs.items():
        if isinstance(value, Future):
            found.append(value)
        elif key == "inputs" and isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, Future))
    return found


def resolve(args, kwargs, resolver: DependencyResolver | None = None):
    """Replace every done future by its value (with ``resolver``'s traversal, if given).

    Returns:
        ``(args, kwargs, failures)`` where ``failures`` is ``[(exception, description), ...]``
        for the futures that failed (their places keep the future), each described as
        Parsl does (:func:`describe`).
    """
    failures = []
    custom = resolver is not None and resolver is not SHALLOW_DEPENDENCY_RESOLVER

    def value(v):
        if custom:
            try:
                return resolver.traverse_to_unwrap(v)
            except Exception as e:  # a failed (or cancelled) future inside ``v``
                failures.append((e, describe(v) if isinstance(v, Future) else repr(v)))
                return v
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


def nested_future(args, kwargs):
    """Where a future sits inside a container among an app call's (resolved) arguments, as
    ``"argument 0"`` or ``"keyword argument 'x'"``; None if there is none. Futures given
    directly (or directly in ``inputs=``) are dependencies; nested ones are not waited for.
    """
    def inside(value, depth=0) -> bool:
        if depth > 20:
            return False
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, (list, tuple, set, frozenset)):
            return any(isinstance(v, Future) or inside(v, depth + 1) for v in value)
        return False

    for i, arg in enumerate(args):
        if inside(arg):
            return f"argument {i}"
    for key, value in kwargs.items():
        if inside(value):
            return f"keyword argument {key!r}"
    return None


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
