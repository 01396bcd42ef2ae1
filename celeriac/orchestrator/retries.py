"""Retry decisions: Parsl's retry budget and retry_handler, or a tenacity policy.

:func:`decide` is pure (no I/O, no sleeping): given a task's record and the exception of its
last try, it says whether to try again and after how long. A wait is served by
:class:`DelayedCalls`, one timer thread for the whole DFK, so a backoff never blocks the DFK
or other tasks.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from celeriac.errors import ConfigurationError, WorkerLost
from celeriac.orchestrator.runlog import carry

logger = logging.getLogger(__name__)

__all__ = ["make_policy", "Decision", "decide", "DelayedCalls"]


def make_policy(policy, where: str):
    """Check a ``retry_policy`` and return it as a ``tenacity.Retrying`` (or None).

    Args:
        policy: None, a ``tenacity.Retrying`` (or any ``tenacity.BaseRetrying``), or a dict
            of its ``retry``/``wait``/``stop`` arguments. Only those three are used: the
            DFK itself does the sleeping and re-raising, so hooks such as ``before_sleep``,
            ``after`` and ``retry_error_callback`` are not called.
        where: names the option in error messages.

    Raises:
        ConfigurationError: anything else.
    """
    if policy is None:
        return None
    import tenacity
    if isinstance(policy, tenacity.BaseRetrying):
        return policy
    if isinstance(policy, dict):
        unknown = set(policy) - {"retry", "wait", "stop"}
        if unknown:
            raise ConfigurationError(
                f"{where}: a retry_policy dict takes retry=, wait=, stop= (tenacity objects); "
                f"not {sorted(unknown)}")
        return tenacity.Retrying(**policy)
    raise ConfigurationError(
        f"{where}: retry_policy must be tenacity.Retrying(retry=..., wait=..., stop=...) or a "
        f"dict of those arguments, not {type(policy).__name__}")


@dataclass(frozen=True)
class Decision:
    """What to do after a failed try: ``retry`` after ``delay`` seconds, or fail for good."""

    retry: bool
    delay: float = 0.0
    lost_free: bool = False  # a free relaunch after a lost worker (no retry budget spent)


def decide(record, exc: BaseException, *, retries: int, retry_handler: Optional[Callable],
           policy, worker_lost_retries: int) -> Decision:
    """Decide the fate of ``record`` whose latest try raised ``exc``; updates its counters.

    A lost worker is relaunched for free ``worker_lost_retries`` times; after that a loss is
    a failure like any other, costing at most one retry. Otherwise, with a tenacity
    ``policy`` it decides (its ``retry``, ``stop`` and ``wait``); without one, Parsl's budget:
    retry while the summed cost (``retry_handler(exc, record)``, default 1) stays within
    ``retries``.

    Raises:
        Exception: whatever ``retry_handler`` or the policy's callbacks raise.
    """
    lost = isinstance(exc, WorkerLost)
    if lost and record.lost_count < worker_lost_retries:
        record.lost_count += 1
        return Decision(True, 0.0, lost_free=True)
    record.fail_count += 1
    record.fail_history.append(repr(exc))
    if policy is not None:
        return _decide_by_policy(record, exc, policy)
    cost = retry_handler(exc, record) if retry_handler is not None else 1
    if lost:
        cost = min(cost, 1)
    record.fail_cost += cost
    return Decision(record.fail_cost <= retries)


def _decide_by_policy(record, exc: BaseException, policy) -> Decision:
    import tenacity
    state = record.retry_state
    if state is None:
        state = record.retry_state = tenacity.RetryCallState(policy, record.func, (), {})
        if record.started is not None:
            state.start_time = record.started
    else:
        state.prepare_for_next_attempt()
    state.set_exception((type(exc), exc, exc.__traceback__))
    if not policy.retry(state):
        return Decision(False)
    # tenacity's own order: the wait first, so that stop_before_delay sees the upcoming sleep
    delay = max(0.0, float(policy.wait(state)) if policy.wait is not None else 0.0)
    state.upcoming_sleep = delay
    if policy.stop(state):
        return Decision(False)
    state.idle_for += delay
    return Decision(True, delay)


class DelayedCalls:
    """Runs callables after a delay on one timer thread (started on first use)."""

    def __init__(self, name: str = "celeriac-timer"):
        self._name = name
        self._heap: list = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def call_later(self, delay: float, func: Callable, *args) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), func, args))
            if self._thread is None:
                self._thread = threading.Thread(target=carry(self._run), name=self._name,
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                        not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _when, _seq, func, args = heapq.heappop(self._heap)
            try:
                func(*args)
            except BaseException:  # the thread must outlive any one call, or retries stop
                logger.exception("delayed call %s failed", getattr(func, "__name__", func))

    def close(self) -> None:
        """Drop what has not run yet and stop the thread. Safe to call more than once."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
