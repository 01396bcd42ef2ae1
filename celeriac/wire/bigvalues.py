"""Big values: buffers of arguments and results above a threshold travel as private files in
shared memory beside the broker, each checked against a digest keyed with the run's key.

Through the broker a 200 MB argument is pickled, signed, base64-encoded into kombu's JSON
envelope, stored by Redis, then decoded and verified again by the worker: about 11 seconds of
copying per task on a 2-core machine. Here, pickle protocol 5 hands every large buffer (a
numpy array's memory; a large ``bytes`` or ``bytearray`` argument or result) to
:func:`_spill`, which writes it once into the run's spill directory (``/dev/shm/celeriac-<run
id>``, 0700, files 0600) and puts ``(file name, size, HMAC-SHA256)`` in the message instead.
The receiver maps the file (copy-on-write, so a task may change its array without touching
the file or another task's copy), checks the digest before unpickling (a changed or swapped
file is refused with :class:`~celeriac.errors.UntrustedPayload`), and hands the mapping to
pickle as the out-of-band buffer: a numpy array arrives without a copy.

The same object sent to several tasks is written once, while any of them is unfinished (a
buffer that may have changed meanwhile is compared with its file first). An argument's file
is deleted when the last task that needs it has finished, a result's once the orchestrator
has read it, and the whole directory when the run ends; a run that starts removes the
directories of runs on this host whose orchestrator died.

A worker reads files only in its own run's spill directory. One on another host has none:
it sends results through the broker as before, and an argument it cannot find fails its try
with :class:`~celeriac.errors.BigValueUnavailable`, upon which the orchestrator sends that call
again through the broker, and every later call to that queue too. A message over RabbitMQ's
size limit then fails its task with :class:`~celeriac.errors.MessageTooLarge`
(:mod:`celeriac.wire.amqp_limits`).

Small values pay nothing: a value with no large buffer pickles exactly as before, and a frame
that holds none starts with pickle's own first byte, never :data:`MARK`.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import mmap
import os
import pickle
import secrets
import shutil
import socket
import threading
from dataclasses import replace

from celeriac.errors import BigValueUnavailable, UntrustedPayload
from celeriac.private_files import is_private_dir, private_dir
from celeriac.wire import payload
from celeriac.wire.call import Earlier

__all__ = ["THRESHOLD", "ROOT_ENV", "MARK", "spill_dir", "BigValues", "dumps_result", "loads"]

#: buffers of at least this many bytes travel as files (smaller ones inside the message)
THRESHOLD = 1 << 20
#: where spill directories live (a shared-memory file system), overridable for tests
ROOT_ENV = "CELERIAC_SPILL_ROOT"
#: the first byte of a frame that refers to files
MARK = b"B"
_OWNER = ".owner"            # "pid host" of the orchestrator that made the directory
_HEADROOM = 256 << 20        # free space left in shared memory after a file is written


def spill_dir(run_id: str) -> str:
    """Run ``run_id``'s spill directory on this host."""
    return os.path.join(os.environ.get(ROOT_ENV, "/dev/shm"), f"celeriac-{run_id}")


def _digest(key: bytes, buffer) -> bytes:
    return hmac.new(key, buffer, hashlib.sha256).digest()


def _usable(directory: str, size: int) -> bool:
    """Whether ``directory`` is this user's private spill directory with room for ``size``."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return is_private_dir(directory) and os.stat(directory).st_uid == os.getuid() and \
        st.f_bavail * st.f_frsize >= size + _HEADROOM


def _write(directory: str, prefix: str, key: bytes, raw: memoryview) -> tuple:
    """Write ``raw`` to a new 0600 file in ``directory``: its ``(name, size, digest)``."""
    name = f"{prefix}-{secrets.token_hex(8)}"
    fd = os.open(os.path.join(directory, name),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    mac = hmac.new(key, digestmod=hashlib.sha256)
    hashing = threading.Thread(target=mac.update, args=(raw,))  # both release the GIL
    hashing.start()
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
    finally:
        hashing.join()
    return name, raw.nbytes, mac.digest()


class _BigBytes:
    """A large ``bytes`` or ``bytearray`` in a value: pickled as an out-of-band buffer."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        return type(self.data), (pickle.PickleBuffer(self.data),)


_BYTES = (bytes, bytearray)


def _wrap(value):
    return _BigBytes(value) if type(value) in _BYTES and \
        len(value) >= THRESHOLD else value


def _wrap_call(call):
    """``call`` with its large ``bytes`` arguments marked to travel out of band."""
    for value in (*call.args, *call.kwargs.values()):
        if type(value) in _BYTES and len(value) >= THRESHOLD:
            break
    else:
        return call
    return replace(call, args=tuple(_wrap(a) for a in call.args),
                   kwargs={k: _wrap(v) for k, v in call.kwargs.items()})


_PLAIN = frozenset({int, float, str, bool, type(None), complex, Earlier})  # Earlier: a marker


def _plain(value, depth: int = 0) -> bool:
    """Whether ``value`` is built only of builtin scalars, small ``bytes`` and (a few levels
    of) tuples, lists and dicts of them: pickle's C pickler writes those exactly as
    cloudpickle does, with no buffer to send out of band, in a fraction of the time."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is bytes:
        return len(value) < THRESHOLD
    if depth >= 3:
        return False
    if kind is tuple or kind is list:
        return len(value) <= 64 and all(_plain(v, depth + 1) for v in value)
    if kind is dict:
        return len(value) <= 64 and all(type(k) is str and _plain(v, depth + 1)
                                         for k, v in value.items())
    return False


def _plain_call(call) -> bool:
    """Whether ``call`` (a :class:`~celeriac.wire.call.Call`) holds only plain values."""
    return (call.staging is None and not call.outputs and _plain(call.args)
            and _plain(call.kwargs) and _plain(call.stdout) and _plain(call.stderr))


def _frame(refs: list, data: bytes) -> bytes:
    return MARK + pickle.dumps((refs, data), protocol=pickle.HIGHEST_PROTOCOL)


class _Spilled:
    """One argument buffer's file, and the tasks that still need it."""

    __slots__ = ("ref", "obj", "holders")

    def __init__(self, ref: tuple, obj):
        self.ref, self.obj, self.holders = ref, obj, set()


_libc = ctypes.CDLL(None)
_libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def _same_content(raw: memoryview, path: str) -> bool:
    """Whether the writable buffer ``raw`` still holds what file ``path`` holds (a memcmp)."""
    if raw.readonly:
        return isinstance(raw.obj, bytes)  # immutable: the same object is the same content
    try:
        with open(path, "rb") as fh:
            m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return False
    try:
        a = (ctypes.c_char * raw.nbytes).from_buffer(raw)
        b = (ctypes.c_char * raw.nbytes).from_buffer(m)
        same = len(m) == raw.nbytes and \
            _libc.memcmp(ctypes.addressof(a), ctypes.addressof(b), raw.nbytes) == 0
        del a, b
        return same
    except (TypeError, ValueError, BufferError):
        return False
    finally:
        try:
            m.close()
        except BufferError:
            pass


class BigValues:
    """One run's big values on the orchestrator's side (thread-safe).

    Args:
        key: the run's signing key (keys the files' digests).
        run_id: the run (names its spill directory).
    """

    def __init__(self, key: bytes, run_id: str):
        self.key, self.run_id = key, run_id
        self.dir = spill_dir(run_id)
        self.inline: set[str] = set()   # queues whose workers cannot see the files
        self.calls: dict = {}           # task id -> (func, call), for a resend inline
        self._by_buffer: dict = {}      # (id of the buffer's owner, size) -> _Spilled
        self._held: dict = {}           # task id -> the _Spilled it needs
        self._lock = threading.RLock()
        sweep_stale(os.path.dirname(self.dir))
        try:
            private_dir(self.dir)
            with open(os.path.join(self.dir, _OWNER), "w") as fh:
                fh.write(f"{os.getpid()} {socket.gethostname()}")
        except OSError:  # no shared memory here: everything goes through the broker
            pass

    def dumps_call(self, func, call, queue: str, what: str) -> bytes:
        """The pickled ``call``, its large buffers written to files (once per object).

        Raises:
            SerializationError: an argument cannot be pickled.
        """
        if queue in self.inline:
            return payload.dumps(call, what)
        if _plain_call(call):  # the common case (a chain's numbers): no cloudpickle needed
            return pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        spilled: list[_Spilled] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            raw = buffer.raw()
            if raw.nbytes < THRESHOLD or not _usable(self.dir, raw.nbytes):
                return True
            spilled.append(self._spill(raw, call.task_id))
            return False

        try:  # no lock unless a buffer is spilled: small calls pay nothing
            data = payload.dumps(_wrap_call(call), what, out_of_band)
        except BaseException:
            if spilled:
                self._held[call.task_id] = spilled
                self.release(call.task_id)
            raise
        if not spilled:
            return data
        with self._lock:
            self._held[call.task_id] = spilled
            self.calls[call.task_id] = (func, call)
        return _frame([entry.ref for entry in spilled], data)

    def _spill(self, raw: memoryview, task_id: str) -> _Spilled:
        """The file of buffer ``raw`` (written now, unless its object already has one that
        still holds the same bytes), now held by ``task_id``."""
        owner = raw.obj
        with self._lock:
            entry = self._by_buffer.get((id(owner), raw.nbytes))
            if entry is None or entry.obj is not owner or \
                    not _same_content(raw, os.path.join(self.dir, entry.ref[0])):
                entry = _Spilled(_write(self.dir, "a", self.key, raw), owner)
                self._by_buffer[(id(owner), raw.nbytes)] = entry
            entry.holders.add(task_id)
            return entry

    def release(self, task_id: str) -> None:
        """Task ``task_id`` has finished: delete the files no unfinished task needs."""
        with self._lock:
            self.calls.pop(task_id, None)
            for entry in self._held.pop(task_id, ()):
                entry.holders.discard(task_id)
                if not entry.holders:
                    self._by_buffer.pop((id(entry.obj), entry.ref[1]), None)
                    _unlink(os.path.join(self.dir, entry.ref[0]))

    def loads(self, data: bytes):
        """A value a worker sent (a result or a failure); its files are deleted once read.

        Raises:
            SerializationError: it cannot be unpickled (BigValueUnavailable: a file is gone).
            UntrustedPayload: a file it refers to does not match its digest.
        """
        return loads(data, self.key, self.run_id, delete=True)

    def close(self) -> None:
        """Delete every file of the run (the run has ended). Idempotent."""
        with self._lock:
            self._by_buffer.clear()
            self._held.clear()
            self.calls.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def sweep_stale(root: str) -> None:
    """Remove spill directories in ``root`` left by orchestrators on this host that died."""
    try:
        names = [n for n in os.listdir(root) if n.startswith("celeriac-")]
    except OSError:
        return
    host = socket.gethostname()
    for name in names:
        path = os.path.join(root, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            with open(os.path.join(path, _OWNER)) as fh:
                pid, owner_host = fh.read().split(" ", 1)
            if owner_host != host or _alive(int(pid)):
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def dumps_result(value, key: bytes, run_id: str, what: str = "app's result") -> bytes:
    """A worker's pickled ``value``, its large buffers written to files in the run's spill
    directory when this host has it (else inside the frame, through the broker).

    Raises:
        SerializationError: ``value`` cannot be pickled.
    """
    if _plain(value):
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    refs: list[tuple] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < THRESHOLD or not _usable(spill_dir(run_id), raw.nbytes):
            return True
        try:
            refs.append(_write(spill_dir(run_id), "r", key, raw))
        except OSError:  # the run ended meanwhile: through the broker
            return True
        return False

    try:
        data = payload.dumps(_wrap(value), what, out_of_band)
    except BaseException:
        for name, _size, _digest_ in refs:
            _unlink(os.path.join(spill_dir(run_id), name))
        raise
    return _frame(refs, data) if refs else data


_verified: set = set()   # files this process has checked: (path, inode, mtime, size, digest)


def loads(data: bytes, key: bytes, run_id: str, delete: bool = False):
    """Unpickle trusted ``data`` (inside a verified frame), mapping the files it refers to.

    Args:
        delete: remove each file once it is mapped (a result, read once).

    Raises:
        SerializationError: it cannot be unpickled (BigValueUnavailable: a file is not here).
        UntrustedPayload: a file does not match its digest.
    """
    if data[:1] != MARK:
        return payload.loads(data)
    refs, inner = pickle.loads(memoryview(data)[1:])
    directory = spill_dir(run_id)
    try:
        buffers = [_open(key, directory, ref) for ref in refs]
    finally:
        if delete:
            for name, _size, _digest_ in refs:
                _unlink(os.path.join(directory, name))
    return payload.loads(inner, buffers)


def _open(key: bytes, directory: str, ref: tuple) -> mmap.mmap:
    """File ``ref`` of ``directory``, mapped copy-on-write, once its digest is checked."""
    name, size, digest = ref
    path = os.path.join(directory, os.path.basename(name))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise BigValueUnavailable(
            f"a value of {size / 1e6:.1f} MB was passed outside the broker, in the run's "
            f"shared-memory directory {directory}, and {socket.gethostname()} cannot read it "
            f"({e.strerror}): the process reading it runs on another host than the run's "
            "orchestrator, or the file was deleted (the run ended)") from None
    try:
        st = os.fstat(fd)
        if st.st_size != size:
            raise UntrustedPayload(_tampered(path, f"it holds {st.st_size} bytes, not {size}"))
        m = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    stamp = (path, st.st_ino, st.st_mtime_ns, size, digest)
    if stamp not in _verified:
        if not hmac.compare_digest(_digest(key, m), digest):
            m.close()
            raise UntrustedPayload(_tampered(path, "its content does not match its digest"))
        if len(_verified) > 1024:
            _verified.clear()
        _verified.add(stamp)
    return m


def _tampered(path: str, how: str) -> str:
    return (f"refused the big value in {path}: {how} (signed with the run's key), so it was "
            "changed or replaced after it was written; nothing in it was unpickled")
