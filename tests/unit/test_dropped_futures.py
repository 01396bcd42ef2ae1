"""A finished future the user drops is freed at once, by reference counting: a long run
leaves no garbage behind for the cycle collector, which would otherwise walk every finished
task of a million-task run (and hold its memory until it did)."""

import gc

from celeriac import python_app
from celeriac.orchestrator.futures import AppFuture, FinishedTask


@python_app
def double(x):
    return 2 * x


def alive(kind) -> int:
    """Objects of ``kind`` that exist now, without collecting cycles first."""
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def test_dropped_finished_futures_need_no_cycle_collection(dfk):
    assert [f.result(timeout=10) for f in [double(i) for i in range(20)]] == \
        [2 * i for i in range(20)]  # warm up: threads and caches made before counting
    gc.collect()
    gc.disable()
    try:
        before = alive(AppFuture), alive(FinishedTask)
        for window in range(3):
            futures = [double(i) for i in range(100)]
            assert [f.result(timeout=10) for f in futures] == [2 * i for i in range(100)]
            del futures
        left = alive(AppFuture) - before[0], alive(FinishedTask) - before[1]
    finally:
        gc.enable()
    # A thread may still hold the last future it completed for a moment; 300 were made.
    assert left[0] <= 2 and left[1] <= 2, f"{left} of 300 futures wait for the cycle collector"


def test_a_finished_future_still_names_itself_in_its_record(dfk):
    fut = double(3)
    assert fut.result(timeout=10) == 6
    record = fut.task_record
    assert isinstance(record, FinishedTask)
    assert record.app_fu is fut and record["app_fu"] is fut
