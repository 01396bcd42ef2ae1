"""Users' done-callbacks on AppFutures and DataFutures run on a thread of their own.

A future is completed by whichever thread is handling the run's events, and a callback
called there that waits for another future (``lambda f: later.result()``) would wait for an
event that only that thread can handle: the whole run would hang. So a callback added by
the user is run by one callback thread, in the order the futures finished; celeriac's own
callbacks (dependencies, DataFutures) stay in the event thread. A callback that raises is
logged, as ``concurrent.futures`` does, and the next one runs.
"""

from __future__ import annotations

import logging
import queue
import threading

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_calls: queue.Queue = queue.Queue()
_thread: threading.Thread | None = None


def deferred(fn):
    """``fn`` wrapped to run on the callback thread when a future calls it."""
    def call_later(fut):
        _start()
        _calls.put((fn, fut))
    return call_later


def wait_idle() -> None:
    """Return once every callback handed over so far has run (at once on the callback
    thread itself, which cannot wait for itself)."""
    if threading.current_thread() is _thread or _thread is None:
        return
    done = threading.Event()
    _calls.put((None, done))
    done.wait()


def _start() -> None:
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="celeriac-callbacks", daemon=True)
            _thread.start()


def _run() -> None:
    while True:
        fn, fut = _calls.get()
        if fn is None:      # wait_idle's marker
            fut.set()
            continue
        try:
            fn(fut)
        except Exception:
            logger.exception("exception calling callback for %r", fut)
