"""Signed payloads: how calls and results cross between orchestrator and workers.

A worker unpickles code it is sent, so nothing is unpickled before its HMAC-SHA256 has been
checked against the run's key. Frames on the wire::

    b"S" + mac(32 bytes) + pickled data     signed; verified before ``pickle.loads``
    b"J" + json                             an unsigned notice (only ever parsed as JSON)

A notice lets a worker that holds the wrong key say so (it cannot sign), without the
orchestrator ever unpickling unsigned bytes. Anyone on the broker can push one, so a notice
decides nothing by itself (see ``CeleryLink._noticed``).

A run publishes :func:`key_check` of its key, so a worker can tell whether a frame it cannot
verify was forged or its own key is wrong (the check reveals nothing about the key).

Code pickled by value (apps defined in ``__main__``, a script, a notebook cell) keeps its file
name and carries the source lines it spans, which the receiving process registers in
``linecache``: a traceback raised there names the user's file, function and line and shows the
line, even where that file does not exist. (cloudpickle >= 3.1.3 renames every such code
object ``<dynamic-code>``.)
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import linecache
import os
import pickle
import secrets
import types
from collections import ChainMap

import cloudpickle

from celeriac.errors import SerializationError, UntrustedPayload

KEY_ENV = "CELERIAC_KEY"
_MAC_LEN = 32


def new_key() -> bytes:
    """A fresh random signing key (hex text, so it can live in a file or environment)."""
    return secrets.token_hex(32).encode()


def load_key(path: str | None = None) -> bytes:
    """The signing key from ``path`` or the ``CELERIAC_KEY`` environment variable.

    Raises:
        UntrustedPayload: neither gives a key.
    """
    if path:
        with open(path, "rb") as fh:
            key = fh.read().strip()
    else:
        key = os.environ.get(KEY_ENV, "").encode()
    if not key:
        raise UntrustedPayload(
            "no signing key: pass --key-file PATH (the run directory's 'worker.key') or set "
            f"{KEY_ENV}; workers refuse to run unsigned code")
    return key


def sign(key: bytes, data: bytes) -> bytes:
    return b"S" + hmac.new(key, data, hashlib.sha256).digest() + data


def key_check(key: bytes, run_id: str) -> str:
    """A value that shows whether two processes hold the same key for ``run_id``."""
    return hmac.new(key, b"celeriac key check " + run_id.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, frame: bytes) -> bytes:
    """The data inside a signed frame.

    Raises:
        UntrustedPayload: the frame is unsigned or its signature does not match ``key``.
    """
    if frame[:1] != b"S" or len(frame) < 1 + _MAC_LEN:
        raise UntrustedPayload("payload is not signed; refusing to unpickle it")
    mac, data = frame[1:1 + _MAC_LEN], frame[1 + _MAC_LEN:]
    if not hmac.compare_digest(mac, hmac.new(key, data, hashlib.sha256).digest()):
        raise UntrustedPayload(
            "payload signature does not match this process's key: the worker and the "
            "orchestrator were given different signing keys")
    return data


_cloudpickle_code_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _reduce_code(code: types.CodeType):
    """cloudpickle's reduction of ``code``, plus its file name and the source lines it spans."""
    make, args = _cloudpickle_code_reduce(code)
    filename = code.co_filename
    last = max((line for _, _, line in code.co_lines() if line is not None),
               default=code.co_firstlineno)
    lines = linecache.getlines(filename)[code.co_firstlineno - 1:last]
    return _rebuild_code, (make, args, filename, code.co_firstlineno, lines)


def _rebuild_code(make, args, filename: str, first: int, lines: list) -> types.CodeType:
    """The inverse of :func:`_reduce_code` (runs in the process that unpickles)."""
    if lines:
        _remember_source(filename, first, lines)
    return make(*args).replace(co_filename=filename)


def _remember_source(filename: str, first: int, lines: list) -> None:
    """Put ``lines`` (starting at line ``first``) of ``filename`` into ``linecache``.

    What the sender ran wins over this machine's copy of the file, if it has one; the rest of
    that copy is kept. An entry with no modification time is never dropped by ``checkcache``.
    """
    known = list(linecache.getlines(filename))
    if len(known) < first - 1 + len(lines):
        known.extend(["\n"] * (first - 1 + len(lines) - len(known)))
    known[first - 1:first - 1 + len(lines)] = lines
    linecache.cache[filename] = (sum(map(len, known)), None, known, filename)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _reduce_code},
                              *cloudpickle.Pickler.dispatch_table.maps)


def dumps(obj, what: str = "object", buffer_callback=None) -> bytes:
    """cloudpickle ``obj``, turning any failure into a SerializationError that says what
    (``buffer_callback``: pickle's, for out-of-band buffers; see celeriac.wire.bigvalues)."""
    try:
        with io.BytesIO() as out:
            _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL,
                     buffer_callback=buffer_callback).dump(obj)
            return out.getvalue()
    except Exception as e:
        raise SerializationError(
            f"could not serialize the {what}: {type(e).__name__}: {e}. Arguments and results "
            "travel between processes, so they must be picklable (open files, locks, sockets "
            "and generators are not)") from None


def seal(key: bytes, obj, what: str = "object") -> bytes:
    return sign(key, dumps(obj, what))


def loads(data: bytes, buffers=None):
    """Unpickle bytes that are already trusted, as a SerializationError on failure."""
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as e:
        raise SerializationError(
            f"could not deserialize payload: {type(e).__name__}: {e}") from None


def unseal(key: bytes, frame: bytes):
    """Verify a signed frame, then unpickle it."""
    return loads(verify(key, frame))


def notice(**fields) -> bytes:
    return b"J" + json.dumps(fields).encode()


def is_notice(frame: bytes) -> bool:
    return frame[:1] == b"J"


def read_notice(frame: bytes) -> dict:
    return json.loads(frame[1:])
