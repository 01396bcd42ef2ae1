"""Each run's own log file: records go to the ``celeriac.log`` of the run they were emitted
for, even with several DataFlowKernels in one process.

Which run a piece of code works for is a context variable. A DFK sets it around its own entry
points (``__init__``, ``submit``, ``cleanup``, ...), and every thread a run starts (the broker
link's, the scaling loop, the retry timer, the thread pools) takes it over through
:func:`carry`, so that records from those threads, and from the future callbacks they run,
reach the right file. Each run's file handler has a :class:`RunFilter` keeping only records
of its run; a record emitted outside any run (rare: code that runs for no DFK) goes to every
run's log, as before, since there is no telling whose it is.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from contextlib import contextmanager
from typing import Callable, Optional

from celeriac.logs import attach
from celeriac.private_files import private_file

__all__ = ["current_run", "working_for", "carry", "in_run", "RunFilter", "start_file_logging",
           "stop_file_logging"]

_RUN: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("celeriac_run",
                                                                    default=None)


def current_run() -> Optional[str]:
    """The id of the run the calling code works for, or None."""
    return _RUN.get()


@contextmanager
def working_for(run_id: str):
    """Within the block, log records (and threads started with :func:`carry`) belong to
    ``run_id``."""
    token = _RUN.set(run_id)
    try:
        yield
    finally:
        _RUN.reset(token)


def in_run(method: Callable) -> Callable:
    """Decorate a DFK method so that it works for the DFK's run (``self.run_id``)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with working_for(self.run_id):
            return method(self, *args, **kwargs)
    return wrapper


def carry(fn: Optional[Callable] = None) -> Callable:
    """A callable that makes the thread calling it work for the run current *now*, then
    calls ``fn`` (if given). Use it as a new thread's target, or as a thread pool's
    ``initializer``: Python threads do not inherit context variables."""
    run = _RUN.get()

    def run_for(*args, **kwargs):
        _RUN.set(run)  # in the thread's own context: for the rest of its life
        if fn is not None:
            return fn(*args, **kwargs)
    return run_for


class RunFilter(logging.Filter):
    """Keeps the records of one run (and those emitted outside any run)."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        run = _RUN.get()  # filters run in the emitting thread, in its context
        return run is None or run == self.run_id


def start_file_logging(path: str, run_id: str, level=logging.INFO) -> logging.Handler:
    """Send ``run_id``'s celeriac log records to ``path`` (mode 0600); returns the handler,
    for :func:`stop_file_logging`."""
    handler = logging.FileHandler(private_file(path))
    handler.setLevel(level)
    handler.addFilter(RunFilter(run_id))
    attach(handler, "celeriac", level)
    return handler


def stop_file_logging(handler: logging.Handler) -> None:
    """Detach and close a handler from :func:`start_file_logging`."""
    logging.getLogger("celeriac").removeHandler(handler)
    handler.close()
