"""A task in flight keeps few objects the cycle collector has to walk: every collection walks
each of them again while the task is alive, so with thousands in flight their number is what
a long run pays per task (benchmarks/scale_probe.py shows that cost as ``GC us``)."""

import collections
import gc
import time

import pytest
from services import wait_for_file

import celeriac
from celeriac import Config, python_app

pytestmark = pytest.mark.integration

IN_FLIGHT = 2000
BUDGET = 20   # tracked objects per task in flight (18 now; 27 while each future made a Condition)


@python_app
def noop(x):
    return x


hold = python_app(wait_for_file)  # keeps a worker busy until the file exists


def tracked() -> collections.Counter:
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


@pytest.mark.timeout(180)
def test_a_task_in_flight_keeps_few_objects_for_the_cycle_collector(tmp_path):
    release = tmp_path / "release"
    with celeriac.load(Config(run_dir=str(tmp_path / "run"))) as dfk:
        assert [f.result(timeout=60) for f in [noop(i) for i in range(20)]] == list(range(20))
        link = dfk.executors["celery"]._link
        slots = link._slots(next(iter(link._queues)))
        holds = [hold(str(release)) for _ in range(max(1, slots))]  # every worker busy
        deadline = time.monotonic() + 30
        while len(link._pending) < len(holds) and time.monotonic() < deadline:
            time.sleep(0.01)
        before = tracked()
        futures = [noop(i) for i in range(IN_FLIGHT)]
        deadline = time.monotonic() + 30
        while (link._outbox or link._held) and time.monotonic() < deadline:
            time.sleep(0.01)
        grown = tracked() - before
        try:
            assert all(not f.done() for f in futures), "the workers were not all held"
            per_task = sum(grown.values()) / IN_FLIGHT
            assert per_task <= BUDGET, (
                f"{per_task:.1f} tracked objects per task in flight (budget {BUDGET}): "
                f"{grown.most_common(8)}")
        finally:
            release.write_text("go")
        assert [f.result(timeout=60) for f in futures] == list(range(IN_FLIGHT))
        assert [f.result(timeout=60) for f in holds] == [str(release)] * len(holds)
