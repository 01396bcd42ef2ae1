"""A long run keeps nothing of the tasks whose futures the user dropped: no task record, no
pending call, no future (benchmarks/scale_probe.py measures the same over 1,000,000 tasks)."""

import gc
import time

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.orchestrator.futures import AppFuture
from celeriac.orchestrator.states import TaskRecord
from celeriac.wire.call import Call

pytestmark = pytest.mark.integration


@python_app
def noop():
    return None


def alive(kind) -> int:
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


@pytest.mark.timeout(300)
def test_tasks_whose_futures_were_dropped_leave_nothing_behind(tmp_path):
    with celeriac.load(Config(run_dir=str(tmp_path))) as dfk:
        link = dfk.executors["celery"]._link
        for _window in range(3):
            futures = [noop() for _ in range(2000)]
            assert [f.result(timeout=120) for f in futures] == [None] * 2000
            del futures
        deadline = time.monotonic() + 10  # the last outcomes' bookkeeping may trail a little
        while (dfk._kernel.tasks or dfk._tries or link._pending) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (len(dfk._kernel.tasks), len(dfk._tries)) == (0, 0)
        assert (len(link._pending), len(link._batches), len(link._refusals)) == (0, 0, 0)
        assert (alive(TaskRecord), alive(AppFuture), alive(Call)) == (0, 0, 0)
