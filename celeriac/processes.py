"""Child processes that must not outlive the orchestrator (broker, local blocks, workers)."""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
from concurrent.futures import Future

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGTERM this process when its parent dies, so a killed orchestrator
    leaves no broker or worker behind (Linux; a no-op elsewhere). Used as a preexec_fn, and
    by workers started from a block script (the setting does not pass through the shell)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


_requests: "queue.SimpleQueue" = queue.SimpleQueue()
_spawner_lock = threading.Lock()
_spawner = None


def popen_tied_to_this_process(args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(args, **kwargs)`` for a child that gets SIGTERM when this process
    dies.

    The kernel sends the parent-death signal when the *thread* that forked the child exits,
    not the process: a block started by the scaling thread would die when that thread ends.
    So every such child is forked by one daemon thread that lives as long as the process.
    """
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawn_forever, name="celeriac-spawner",
                                        daemon=True)
            _spawner.start()
    result: Future = Future()
    _requests.put((result, args, kwargs))
    return result.result()


def _spawn_forever() -> None:
    while True:
        result, args, kwargs = _requests.get()
        try:
            result.set_result(subprocess.Popen(args, preexec_fn=die_with_parent, **kwargs))
        except BaseException as e:  # handed to the caller, who raises it
            result.set_exception(e)
