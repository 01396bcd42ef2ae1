"""Existing brokers, unreachable brokers, a broker that dies, workers that never start."""

import os
import socket
import time

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.errors import ExecutorError, SubmitException
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator import sender
from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.providers import LocalProvider

pytestmark = pytest.mark.integration


@python_app
def double(x):
    return 2 * x


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_unreachable_broker_is_a_clear_error_at_load(tmp_path):
    start = time.monotonic()
    with pytest.raises(ExecutorError, match="cannot reach the broker at redis://127.0.0.1"):
        celeriac.load(Config(broker=f"redis://127.0.0.1:{closed_port()}/0", run_dir=str(tmp_path)))
    assert time.monotonic() - start < 30
    celeriac.clear()


@pytest.mark.timeout(120)
def test_existing_broker_then_broker_dies(tmp_path, monkeypatch):
    monkeypatch.setattr(sender, "SEND_GIVE_UP", 2.0)
    broker = EmbeddedRedis(str(tmp_path / "redis")).start()
    try:
        with celeriac.load(Config([CeleryExecutor(workers_per_node=1)], broker=broker.url,
                                  run_dir=str(tmp_path))):
            assert double(2).result(timeout=60) == 4
            assert not (tmp_path / "000" / "broker").exists()  # nothing embedded was started
            broker.stop()
            with pytest.raises(SubmitException, match="could not send the task to the broker"):
                double(3).result(timeout=60)
    finally:
        broker.stop()


@pytest.mark.timeout(120)
def test_workers_that_cannot_start_fail_tasks_with_their_own_message(tmp_path):
    provider = LocalProvider(worker_init='echo "module load: no such environment" >&2; exit 3')
    with celeriac.load(Config([CeleryExecutor(label="broken", provider=provider)],
                              run_dir=str(tmp_path))):
        with pytest.raises(ExecutorError) as info:
            double(1).result(timeout=90)
        assert "no such environment" in str(info.value)
        assert "exit code 3" in str(info.value)
        with pytest.raises(ExecutorError):  # later calls fail at once, no waiting
            double(2).result(timeout=5)


@pytest.mark.timeout(90)
def test_by_hand_worker_from_the_run_file(tmp_path):
    import subprocess
    import sys
    with celeriac.load(Config([CeleryExecutor(label="pool", provider=None)],
                              run_dir=str(tmp_path))) as dfk:
        worker = subprocess.Popen([sys.executable, "-m", "celeriac", "worker", "--run-file",
                                   os.path.join(dfk.run_dir, "worker.json"), "--executor",
                                   "pool", "--processes", "2"])
        try:
            assert [double(i).result(timeout=60) for i in range(4)] == [0, 2, 4, 6]
        finally:
            worker.terminate()
            worker.wait(timeout=30)


@python_app
def slow_double(x):
    time.sleep(1)
    return 2 * x


@pytest.mark.timeout(150)
def test_tasks_queued_when_the_broker_restarts_are_relaunched(tmp_path, caplog):
    broker = EmbeddedRedis(str(tmp_path / "redis")).start()
    try:
        with celeriac.load(Config([CeleryExecutor(workers_per_node=1)], broker=broker.url,
                                  run_dir=str(tmp_path))):
            assert double(1).result(timeout=60) == 2
            futures = [slow_double(i) for i in range(4)]  # one runs, the rest wait in the queue
            time.sleep(0.5)
            broker.stop()
            broker.start()  # same address and password, empty memory: the queue is gone
            assert [f.result(timeout=120) for f in futures] == [0, 2, 4, 6]
            assert "restarted; relaunching" in caplog.text
    finally:
        broker.stop()
