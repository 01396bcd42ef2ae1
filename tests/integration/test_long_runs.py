"""A long run keeps nothing of the tasks whose futures the user dropped: no task record, no
pending call, no future (benchmarks/scale_probe.py measures the same over 1,000,000 tasks)."""

import gc
import time

import pytest
from services import wait_for_file

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
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


hold = python_app(wait_for_file)  # keeps a worker busy until the file exists


@python_app
def echo(x):
    return x


@pytest.mark.timeout(300)
def test_calls_submitted_one_by_one_behind_thousands_are_sent_packed(tmp_path):
    # A long run with a bounded window submits a call as each result comes in. Behind
    # thousands of calls still to run, those go packed, as a burst does, rather than one
    # message per call, which costs each worker a message's overhead per call.
    config = Config([CeleryExecutor(label="celery", workers_per_node=2)],
                    run_dir=str(tmp_path / "run"))
    gate = str(tmp_path / "open")
    with celeriac.load(config) as dfk:
        link = dfk.executors["celery"]._link
        assert [f.result(timeout=120) for f in [echo(i) for i in range(50)]] == list(range(50))
        held = [hold(gate) for _ in range(2)]  # both workers busy: nothing runs meanwhile
        backlog = [echo(i) for i in range(2100)]
        while link._outbox:
            time.sleep(0.01)
        time.sleep(0.2)  # the burst's messages are out
        messages = link.stats["messages"]
        trickle = []
        for i in range(200):
            trickle.append(echo(i))
            time.sleep(0.002)
        while link._outbox:
            time.sleep(0.01)
        time.sleep(0.2)
        sent = link.stats["messages"] - messages
        open(gate, "w").close()
        assert [f.result(timeout=120) for f in held] == [gate, gate]
        assert [f.result(timeout=120) for f in backlog] == list(range(2100))
        assert [f.result(timeout=120) for f in trickle] == list(range(200))
    assert sent <= 50, f"200 calls went in {sent} messages"
