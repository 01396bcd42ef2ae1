"""A burst of equal calls long enough to be worth packing (tens of milliseconds each) on two
real solo workers: it goes in a few messages, yet both workers get an even share and neither
waits at the end while calls are still queued."""

import collections

import pytest

from celeriac import python_app

pytestmark = pytest.mark.integration


@python_app
def nap(i, seconds):
    import time

    from celery import current_task
    started = time.time()
    time.sleep(seconds)
    return i, current_task.request.hostname, started, time.time()


@pytest.mark.timeout(120)
def test_a_new_apps_burst_of_long_calls_is_packed_spread_evenly_and_ends_together(dfk):
    link = dfk.executors["celery"]._link
    before = dict(link.stats)
    futures = [nap(i, 0.02) for i in range(200)]  # never run before: a few probes, then held
    outcomes = [fut.result(timeout=60) for fut in futures]
    assert [o[0] for o in outcomes] == list(range(200))
    messages = link.stats["messages"] - before["messages"]
    assert link.stats["calls"] - before["calls"] == 200
    # One message per call made each worker pay its per-message cost between every two
    # calls (about 4% of a 50 ms call's time on the 2-core machine); packed, far fewer.
    assert messages <= 200 / 3, link.stats

    calls = collections.defaultdict(list)
    for _i, worker, started, ended in outcomes:
        calls[worker].append((started, ended))
    assert len(calls) == 2
    assert all(60 <= len(ran) <= 140 for ran in calls.values()), {
        w: len(ran) for w, ran in calls.items()}
    # Neither worker sat idle at the end while calls it could have run were waiting: after
    # one ran its last call, the other started at most a couple more (the rest of its last,
    # small, message).
    for worker, ran in calls.items():
        idle_from = max(end for _start, end in ran)
        later = [start for other, theirs in calls.items() if other != worker
                 for start, _end in theirs if start > idle_from]
        assert len(later) <= 3, (worker, len(later))
