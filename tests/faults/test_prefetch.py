"""With ``pool="threads"`` a worker fetches its next task while one runs (so it is in hand when
the running one ends), and no more than that one (so workers stay balanced); killed, it loses
neither."""

import json
import os
import signal
import time

import pytest
import redis
from ledger import Figures, Ledger, mark

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.wire.keys import queue_name


@python_app
def slow_double(ledger_dir, key, seconds):
    mark(ledger_dir, key)
    time.sleep(seconds)
    return 2 * key


def _until(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_a_worker_holds_the_next_task_while_one_runs_and_killed_loses_neither(tmp_path):
    ledger = Ledger(tmp_path)
    config = Config([CeleryExecutor(label="celery", max_workers_per_node=1, pool="threads")],
                    run_dir=str(tmp_path / "runinfo"))
    with celeriac.load(config) as dfk:
        with open(os.path.join(dfk.run_dir, "worker.json")) as f:
            client = redis.Redis.from_url(json.load(f)["broker_url"])
        queue = queue_name(dfk.run_id, "celery")
        futs = {k: slow_double(ledger.dir, k, 6) for k in range(5)}
        _until(lambda: ledger.runs() == {"0": 1}, "the first task runs")
        # 5 sent, 1 running, 1 in the worker's hands: 3 left in the queue, and they stay.
        _until(lambda: client.llen(queue) == 3, "the worker takes the next task")
        time.sleep(1)
        assert client.llen(queue) == 3 and ledger.runs() == {"0": 1}
        [pid] = {int(name.split(".")[1]) for name in os.listdir(ledger.dir)}
        os.kill(pid, signal.SIGKILL)  # the running task and the one in hand go with it
        figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=180)
        runs = ledger.runs()
        client.close()
    assert figures == Figures(submitted=5, correct=5, lost=0, ran_twice=1, hung=0)
    assert runs["0"] == 2 and all(runs[str(k)] == 1 for k in range(1, 5))
