"""A worker killed with SIGKILL mid-task does not lose the task: it runs again elsewhere
(on Redis and on RabbitMQ)."""

import os
import signal
import time

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


def _record_and_sleep(marker, seconds):
    with open(marker, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return "finished"


record_and_sleep = python_app(_record_and_sleep, executors=["solo"])
record_and_sleep_prefork = python_app(_record_and_sleep, executors=["prefork"])


@python_app(executors=["solo"])
def hold_the_gil(n, marker):
    with open(marker, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return sum(range(n))  # one C call: the worker's own threads cannot run meanwhile


@python_app(executors=["prefork"])
def where():
    from celery import current_task
    return current_task.request.hostname


@pytest.fixture(scope="module", params=["redis", "amqp"])
def dfk(request, tmp_path_factory):
    """A run on the embedded Redis, then on the test RabbitMQ (native redelivery)."""
    celeriac.clear()
    broker = request.getfixturevalue("rabbitmq") if request.param == "amqp" else None
    d = celeriac.load(Config([
        CeleryExecutor(label="solo", workers_per_node=2),
        CeleryExecutor(label="prefork", workers_per_node=1, pool="prefork", concurrency=2),
    ], broker=broker, run_dir=str(tmp_path_factory.mktemp(request.param))))
    yield d
    d.cleanup()
    celeriac.clear()


def _wait_for_lines(path, n, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as fh:
                lines = fh.read().split()
            if len(lines) >= n:
                return [int(x) for x in lines]
        time.sleep(0.05)
    raise AssertionError(f"{path} never had {n} lines")


def test_app_pinned_to_an_executor_runs_only_on_its_workers(dfk):
    assert all(where().result(timeout=60).startswith("celeriac-prefork-") for _ in range(3))


@pytest.mark.timeout(120)
def test_solo_worker_killed_mid_task_the_task_is_rerun(dfk, tmp_path, caplog):
    marker = str(tmp_path / "solo.pids")
    fut = record_and_sleep(marker, 3)
    [pid] = _wait_for_lines(marker, 1)
    os.kill(pid, signal.SIGKILL)
    assert fut.result(timeout=90) == "finished"
    pids = _wait_for_lines(marker, 2)
    assert pids[1] != pid
    assert fut.task_record.lost_count == 1
    assert "died while holding it" in caplog.text


@pytest.mark.timeout(120)
def test_prefork_child_killed_mid_task_the_task_is_rerun(dfk, tmp_path):
    marker = str(tmp_path / "prefork.pids")
    fut = record_and_sleep_prefork(marker, 2)
    [pid] = _wait_for_lines(marker, 1)
    os.kill(pid, signal.SIGKILL)
    assert fut.result(timeout=90) == "finished"
    assert len(_wait_for_lines(marker, 2)) == 2
    assert fut.task_record.lost_count == 1


@pytest.mark.timeout(120)
def test_task_holding_the_gil_longer_than_the_heartbeat_ttl_runs_once(dfk, tmp_path):
    from celeriac.wire.redis_recovery import GRACE
    from celeriac.workers.liveness import TTL
    start = time.perf_counter()
    sum(range(10 ** 7))
    n = int(10 ** 7 * (GRACE + TTL + 3) / (time.perf_counter() - start))
    marker = str(tmp_path / "gil.pids")
    fut = hold_the_gil(n, marker)
    assert fut.result(timeout=100) == n * (n - 1) // 2
    with open(marker) as fh:
        assert len(fh.read().split()) == 1  # never taken for a dead worker and rerun
    assert fut.task_record.lost_count == 0
