"""Memoization: the key of an app call, and the table of results (and calls in flight).

A call's key hashes the function's identity (its name and source, so editing the function
invalidates old results) and its arguments, each turned into bytes by :func:`id_for_memo`.
``id_for_memo`` is a ``functools.singledispatch``: register your own type with
``@id_for_memo.register(MyType)``. Unknown types raise ``ValueError("unknown type for
memoization ...")``, which fails the task through its future.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import logging
import marshal
import struct
import sys
import threading
import weakref
from concurrent.futures import Future
from functools import singledispatch
from typing import Optional

from celeriac.staging.files import File

logger = logging.getLogger(__name__)

__all__ = ["id_for_memo", "function_identity", "make_hash", "MemoTable"]


@singledispatch
def id_for_memo(obj, output_ref: bool = False) -> bytes:
    """Bytes that identify ``obj`` for memoization: equal values give equal bytes.

    The built-in types are hashed only when the type is exactly theirs: a subclass (an
    IntEnum, a namedtuple, a defaultdict) may mean something else, so it needs its own
    registration. Enum members are keyed by their class and name.

    Args:
        obj: one argument of an app call (or an element inside one).
        output_ref: True for the entries of ``outputs=[...]`` (Parsl's signature).

    Raises:
        ValueError: no hash is known for ``obj``'s type.
    """
    return _other(obj)


def _other(obj) -> bytes:
    """Types without an exact registration: enum members, numpy arrays, or an error."""
    cls = type(obj)
    if isinstance(obj, enum.Enum):
        return b"enum:" + _frame(f"{cls.__module__}.{cls.__qualname__}.{obj.name}".encode())
    numpy = sys.modules.get("numpy")  # numpy support without importing numpy ourselves
    if numpy is not None and cls is numpy.ndarray and obj.dtype != object:
        return b"ndarray:" + _frame(str(obj.dtype).encode()) + _frame(repr(obj.shape).encode()) \
            + _frame(numpy.ascontiguousarray(obj).tobytes())
    raise ValueError(
        f"unknown type for memoization: {cls.__module__}.{cls.__qualname__}; "
        "register a hash for it with @celeriac.id_for_memo.register(ThatType), or list the "
        "argument in ignore_for_cache=[...]")


def _exactly(cls):
    """Register a handler for ``cls`` itself; its subclasses go to :func:`_other`."""
    def register(handler):
        def exact(obj, output_ref=False):
            return handler(obj, output_ref) if type(obj) is cls else _other(obj)
        id_for_memo.register(cls)(exact)
        return handler
    return register


def _frame(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


@_exactly(type(None))
def _none(obj, output_ref=False):
    return b"None"


@_exactly(bool)
def _bool(obj, output_ref=False):
    return b"bool:" + (b"1" if obj else b"0")


@_exactly(int)
def _int(obj, output_ref=False):
    return b"int:" + _frame(str(obj).encode())


@_exactly(float)
def _float(obj, output_ref=False):
    return b"float:" + _frame(repr(obj).encode())


@_exactly(str)
def _str(obj, output_ref=False):
    return b"str:" + _frame(obj.encode("utf-8", "surrogatepass"))


@_exactly(bytes)
def _bytes(obj, output_ref=False):
    return b"bytes:" + _frame(obj)


def _sequence(tag: bytes, items, output_ref: bool) -> bytes:
    parts = [_frame(id_for_memo(item, output_ref)) for item in items]
    return tag + struct.pack(">Q", len(parts)) + b"".join(parts)


@_exactly(list)
def _list(obj, output_ref=False):
    return _sequence(b"list:", obj, output_ref)


@_exactly(tuple)
def _tuple(obj, output_ref=False):
    return _sequence(b"tuple:", obj, output_ref)


@_exactly(set)
@_exactly(frozenset)
def _set(obj, output_ref=False):
    parts = sorted(_frame(id_for_memo(item, output_ref)) for item in obj)
    return b"set:" + struct.pack(">Q", len(parts)) + b"".join(parts)


@_exactly(dict)
def _dict(obj, output_ref=False):
    # Order-independent: {'a': 1, 'b': 2} and {'b': 2, 'a': 1} are the same call.
    parts = sorted(_frame(id_for_memo(k)) + _frame(id_for_memo(v, output_ref))
                   for k, v in obj.items())
    return b"dict:" + struct.pack(">Q", len(parts)) + b"".join(parts)


@_exactly(File)
def _file(obj, output_ref=False):
    return b"File:" + _frame(obj.url.encode())


_identities: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # func -> {name: id}
_identities_lock = threading.Lock()


def function_identity(func, name: str) -> bytes:
    """The function's name and source; compiled code where the source cannot be read.
    (Values a closure captures are not part of it, as in Parsl.)"""
    with _identities_lock:
        try:
            cached = _identities.get(func, {}).get(name)
        except TypeError:  # not weakly referenceable: computed each time
            cached = None
    if cached is not None:
        return cached
    try:
        body = inspect.getsource(func).encode()
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        body = marshal.dumps(code) if code is not None else repr(func).encode()
    identity = _frame(name.encode()) + _frame(body)
    with _identities_lock:
        try:
            _identities.setdefault(func, {})[name] = identity
        except TypeError:
            pass
    return identity


def make_hash(func, name: str, args: tuple, kwargs: dict, ignore_for_cache=(),
              kind: str = "python") -> str:
    """The memo key of one call (after its future arguments were replaced by results).

    Raises:
        ValueError: an argument has a type that ``id_for_memo`` does not know.
    """
    kwargs = {k: v for k, v in kwargs.items() if k not in ignore_for_cache}
    outputs = kwargs.pop("outputs", None)
    digest = hashlib.sha256(_frame(kind.encode()) + function_identity(func, name))
    digest.update(_frame(id_for_memo(list(args))))
    digest.update(_frame(id_for_memo(kwargs)))
    if outputs is not None:
        digest.update(_frame(id_for_memo(list(outputs), output_ref=True)))
    return digest.hexdigest()


class BasicMemoizer:
    """Parsl's ``BasicMemoizer`` options, for ``Config(memoizer=...)``: the same meaning as
    Config's ``app_cache`` (``memoize``), ``checkpoint_files``, ``checkpoint_mode`` and
    ``checkpoint_period``."""

    def __init__(self, *, checkpoint_files=None, checkpoint_period=None, checkpoint_mode=None,
                 memoize: bool = True):
        self.checkpoint_files = checkpoint_files
        self.checkpoint_period = checkpoint_period
        self.checkpoint_mode = checkpoint_mode
        self.memoize = memoize

    def __repr__(self):
        return (f"BasicMemoizer(checkpoint_mode={self.checkpoint_mode!r}, "
                f"memoize={self.memoize!r})")


class Verdict(enum.Enum):
    """What :meth:`MemoTable.claim` says of a call."""

    hit = "hit"          # the result is known
    failed = "failed"    # an identical call failed in this run: its exception
    wait = "wait"        # an identical call is in flight
    run = "run"          # run it: the caller now owns the key


class MemoTable:
    """Results by key: finished ones (this run's, and those loaded from checkpoints), and the
    future of the one call in flight for each key, so identical calls at once run once.

    Loaded results stay pickled until first used, so loading many checkpoints is cheap.
    """

    def __init__(self, loaded: Optional[dict] = None):
        self._lock = threading.Lock()
        self._pickled: dict[str, bytes] = dict(loaded or {})
        self._futures: dict[str, Future] = {}

    def claim(self, key: str, future: Future):
        """Look ``key`` up for a task whose future is ``future``.

        Returns:
            ``(Verdict.hit, value)`` for a known result; ``(Verdict.failed, exception)`` when
            an identical call failed in this run (exceptions are memoized within a run, as in
            Parsl; they are never checkpointed); ``(Verdict.wait, other_future)`` while an
            identical call is in flight; ``(Verdict.run, None)`` if this task must run (it now
            owns the key until :meth:`release`).
        """
        with self._lock:
            pickled = self._pickled.get(key)
            if pickled is None:
                other = self._futures.get(key)
                if other is None or other.cancelled():
                    self._futures[key] = future
                    return Verdict.run, None
                if not other.done():
                    return Verdict.wait, other
                if other.exception() is not None:
                    return Verdict.failed, other.exception()
                return Verdict.hit, other.result()
        import cloudpickle
        try:
            return Verdict.hit, cloudpickle.loads(pickled)
        except Exception as e:  # e.g. its class was renamed since: a miss, so it runs again
            logger.warning("checkpointed result %s cannot be loaded (%r); running the task "
                           "again", key, e)
            with self._lock:
                self._pickled.pop(key, None)
            return self.claim(key, future)
