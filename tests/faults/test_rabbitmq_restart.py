"""RabbitMQ restarting mid-run: its durable queues and persistent messages come back, every
task ends correct, none is lost or hangs, and only a task running at the restart may run a
second time (RabbitMQ gives back what was unacknowledged; its new holder reports it lost), and
only such a task counts as a lost try."""

import dataclasses
import os
import signal
import time

import pytest
from ledger import Figures, Ledger, mark
from services import RMQ_ENV, _run_script, rabbitmq  # noqa: F401  (the session's RabbitMQ)

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor


def work(ledger_dir, key, seconds):
    mark(ledger_dir, key)
    time.sleep(seconds)
    return 2 * key


def restart_rabbitmq(pause: float) -> None:
    """SIGTERM the test broker (its data kept), then start it again ``pause`` s later."""
    pid = int(open(os.path.join(RMQ_ENV["STATE_DIR"], "beam.pid")).read())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(pause)
    up = _run_script("start_rabbitmq.sh", RMQ_ENV)
    assert up.returncode == 0, up.stdout + up.stderr


@pytest.mark.timeout(300)
def test_a_rabbitmq_restart_mid_run_loses_nothing(rabbitmq, tmp_path):  # noqa: F811
    n, seconds = 40, 0.5
    ledger = Ledger(tmp_path)
    app = python_app(work)
    try:
        with celeriac.load(Config([CeleryExecutor(label="w", workers_per_node=2)],
                                  broker=rabbitmq, run_dir=str(tmp_path / "runs"))):
            futures = {k: app(ledger.dir, k, seconds) for k in range(n)}
            deadline = time.monotonic() + 90
            while len(os.listdir(ledger.dir)) < 6:
                assert time.monotonic() < deadline, "fewer than 6 tasks started"
                time.sleep(0.01)
            restart_rabbitmq(1.0)
            figures = ledger.figures(futures, {k: 2 * k for k in futures}, timeout=200)
            lost_tries = sum(f.task_record.lost_count for f in futures.values())
    finally:
        celeriac.clear()
    print(figures, "lost tries:", lost_tries)
    # Two workers run one task each at the restart: at most those two run again, and only
    # they count as lost tries (a message a worker had reserved but not started is not).
    assert dataclasses.replace(figures, ran_twice=0) == Figures(n, n, 0, 0, 0)
    assert figures.ran_twice <= 2
    assert lost_tries <= 2

