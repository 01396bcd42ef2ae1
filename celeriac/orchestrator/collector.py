"""The cycle collector's pace while a run is loaded: a young collection every 50,000 new
objects instead of CPython's 700, given back when the last run ends.

Each task in flight keeps about 18 objects alive (its two futures, its record, the call
waiting to go), and every young collection walks them again before they are old: with
thousands of tasks in flight the collector took a fifth of the orchestrator's CPU. At
10,000 a long run still paid 5-7 us a task for it, against 3-4 in a 10,000-task run: a
long run's young objects are scattered over a heap that has been used for a while, so each
one costs more to visit. At 50,000 the collector seldom runs while tasks flow at a steady
pace (allocations and frees balance), and both cost 2-4 us. Fewer young collections hold
cyclic garbage longer: a few megabytes of young objects at most. Thresholds that are not
CPython's default (set by the user, or a newer Python's own) are left alone.
"""

from __future__ import annotations

import gc
import threading

YOUNG = 50_000                 # new objects between young collections while a run is loaded
_CPYTHON_DEFAULT = (700, 10, 10)

_lock = threading.Lock()
_runs = 0
_given_back = None             # the thresholds to restore when the last run ends


def run_started() -> None:
    """A run was loaded: collect young objects less often (if the thresholds are default)."""
    global _runs, _given_back
    with _lock:
        _runs += 1
        if _runs == 1 and gc.get_threshold() == _CPYTHON_DEFAULT:
            _given_back = _CPYTHON_DEFAULT
            gc.set_threshold(YOUNG, *_CPYTHON_DEFAULT[1:])


def run_ended() -> None:
    """A run was cleaned up: the last one gives the thresholds back (unless changed since)."""
    global _runs, _given_back
    with _lock:
        _runs = max(0, _runs - 1)
        if _runs == 0 and _given_back is not None:
            if gc.get_threshold() == (YOUNG, *_given_back[1:]):
                gc.set_threshold(*_given_back)
            _given_back = None
