"""Workers started by hand on RabbitMQ: `celeriac worker` given only the broker URL and the key
finds the run, and `--autoscale` counts the tasks its processes hold, not only those queued,
as on Redis."""

import os
import time

import pytest
from services import start_worker, stop

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.wire.runfile import RunFile

pytestmark = pytest.mark.integration


@python_app
def double(x):
    return 2 * x


@python_app
def meet(rendezvous, expected):
    """Wait (up to 40 s) until ``expected`` tasks run at once; say how many did."""
    import os
    import time
    import uuid
    open(os.path.join(rendezvous, uuid.uuid4().hex), "w").close()
    deadline = time.monotonic() + 40
    while len(os.listdir(rendezvous)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(os.listdir(rendezvous))


@pytest.mark.timeout(120)
def test_worker_given_the_rabbitmq_url_finds_the_only_run_and_joins(rabbitmq, tmp_path):
    ex = CeleryExecutor(label="byhand", provider=None)
    with celeriac.load(Config([ex], broker=rabbitmq, run_dir=str(tmp_path / "runs"),
                              strategy_period=0.5)) as dfk:
        run = RunFile.read(os.path.join(dfk.run_dir, "worker.json"))
        worker = start_worker("--executor", "byhand",
                              env={"CELERIAC_BROKER": rabbitmq, "CELERIAC_KEY": run.key})
        try:
            assert [double(i).result(timeout=60) for i in range(3)] == [0, 2, 4]
            assert worker.poll() is None
        finally:
            stop(worker)


@pytest.mark.timeout(180)
def test_autoscale_on_rabbitmq_counts_the_tasks_its_processes_run(rabbitmq, tmp_path):
    """One task runs, then two more are queued: the pool grows to three processes (one task
    running plus two queued), so all three run at once; counting only the queue it would
    stop at two and the three would never meet."""
    rendezvous = tmp_path / "meet"
    rendezvous.mkdir()
    ex = CeleryExecutor(label="auto", provider=None)
    with celeriac.load(Config([ex], broker=rabbitmq, run_dir=str(tmp_path / "runs"),
                              strategy_period=0.5)) as dfk:
        worker = start_worker("--run-file", os.path.join(dfk.run_dir, "worker.json"),
                              "--executor", "auto", "--autoscale", "3,1",
                              "--autoscale-keepalive", "60", "--prefetch-multiplier", "1")
        try:
            first = meet(str(rendezvous), 3)
            deadline = time.monotonic() + 60
            while not os.listdir(rendezvous):
                assert time.monotonic() < deadline, "the first task never started"
                time.sleep(0.1)
            time.sleep(3)  # the pool has seen one task held and none queued
            futures = [first] + [meet(str(rendezvous), 3) for _ in range(2)]
            assert [f.result(timeout=90) for f in futures] == [3, 3, 3]
            assert worker.poll() is None
        finally:
            stop(worker)
