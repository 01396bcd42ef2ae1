"""Processes killed under a run: a worker's supervisor (kill -9), and the broker gone for
longer than the run waits for it. Nothing is lost without an error saying why; nothing hangs."""

import os
import signal
import time

import psutil
import pytest
from ledger import Figures, Ledger, mark

import celeriac
from celeriac import Config, python_app
from celeriac.errors import ExecutorError
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator import link
from celeriac.orchestrator.broker import EmbeddedRedis


@python_app
def slow_double(ledger_dir, key, seconds):
    mark(ledger_dir, key)
    time.sleep(seconds)
    return 2 * key


def _wait_for_runs(ledger, n, timeout=60):
    deadline = time.monotonic() + timeout
    while sum(ledger.runs().values()) < n:
        assert time.monotonic() < deadline, f"fewer than {n} tasks started in {timeout}s"
        time.sleep(0.05)


def _running_pids(ledger) -> set:
    return {int(name.split(".")[1]) for name in os.listdir(ledger.dir)}


@pytest.mark.timeout(180)
def test_supervisor_killed_mid_task_every_task_still_finishes(tmp_path):
    ledger = Ledger(tmp_path)
    config = Config([CeleryExecutor(label="celery", max_workers_per_node=2)],
                    run_dir=str(tmp_path / "runinfo"), strategy_period=1)
    with celeriac.load(config):
        futs = {k: slow_double(ledger.dir, k, 3) for k in range(4)}
        _wait_for_runs(ledger, 2)
        [worker] = {psutil.Process(pid).ppid() for pid in _running_pids(ledger)}
        supervisor = psutil.Process(worker)
        assert "worker" in " ".join(supervisor.cmdline())
        os.kill(supervisor.pid, signal.SIGKILL)
        figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=120)
    # The workers die with their supervisor, finishing the task in hand first (a warm
    # shutdown); the queued tasks run on the block the strategy starts in its place.
    assert figures == Figures(submitted=4, correct=4, lost=0, ran_twice=0, hung=0)


@pytest.mark.timeout(120)
def test_broker_gone_past_the_give_up_time_fails_every_task_saying_so(tmp_path, monkeypatch):
    monkeypatch.setattr(link, "LISTEN_GIVE_UP", 4.0)
    ledger = Ledger(tmp_path)
    broker = EmbeddedRedis(str(tmp_path / "redis")).start()
    try:
        config = Config([CeleryExecutor(label="celery", max_workers_per_node=2)],
                        broker=broker.url, run_dir=str(tmp_path / "runinfo"))
        with celeriac.load(config):
            futs = {k: slow_double(ledger.dir, k, 30) for k in range(3)}
            _wait_for_runs(ledger, 2)
            broker.stop()
            start = time.monotonic()
            figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=60)
            waited = time.monotonic() - start
            errors = [f.exception() for f in futs.values()]
    finally:
        broker.stop()
    assert figures == Figures(submitted=3, correct=0, lost=3, ran_twice=0, hung=0)
    assert waited < 30  # the give-up time, not the tasks' 30 s
    for exc in errors:
        assert isinstance(exc, ExecutorError), repr(exc)
        assert "lost the broker at redis://:***@127.0.0.1" in str(exc)
