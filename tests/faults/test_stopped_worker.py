"""A worker stopped with SIGSTOP while its supervisor still beats: the user is warned, naming
the worker and the task, and the task runs on another worker; the first outcome counts. On
Redis the same message is put back in its queue; on RabbitMQ, which cannot take a message
from the connection holding it, the task runs again as a new try (WorkerLost), and the
stopped copy's outcome, once it resumes, is ignored."""

import os
import signal
import time

import pytest
from ledger import Figures, Ledger, mark
from services import rabbitmq  # noqa: F401  (the session's RabbitMQ)

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.wire.redis_recovery import STOPPED_RELAUNCH, STOPPED_WARN

pytestmark = pytest.mark.parametrize("broker", ["redis", "amqp"])


@python_app
def hold(ledger_dir, key, seconds):
    mark(ledger_dir, key)
    time.sleep(seconds)
    return 2 * key


def running_pid(ledger, key, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir(ledger.dir):
            if name.split(".")[0] == str(key):
                return int(name.split(".")[1])
        time.sleep(0.05)
    raise AssertionError(f"task {key} never started")


@pytest.mark.timeout(240)
def test_stopped_worker_is_reported_and_its_task_runs_elsewhere(broker, tmp_path, caplog,
                                                                request):
    """With the default intervals: a warning after STOPPED_WARN, the task elsewhere after
    STOPPED_RELAUNCH; the stopped copy, resumed, finishes too and changes nothing."""
    ledger = Ledger(tmp_path)
    url = request.getfixturevalue("rabbitmq") if broker == "amqp" else None
    with celeriac.load(Config([CeleryExecutor(label="w", workers_per_node=2)], broker=url,
                              run_dir=str(tmp_path / "runs"))) as dfk:
        stuck = hold(ledger.dir, 0, 8)
        pid = running_pid(ledger, 0)
        time.sleep(2)  # its worker has said it runs it
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            futures = {0: stuck, **{k: hold(ledger.dir, k, 0.2) for k in range(1, 5)}}
            figures = ledger.figures(futures, {k: 2 * k for k in futures},
                                     timeout=STOPPED_RELAUNCH + 40)
            waited = time.monotonic() - stopped_at
        finally:
            os.kill(pid, signal.SIGCONT)
        assert figures == Figures(submitted=5, correct=5, lost=0, ran_twice=1, hung=0)
        assert waited >= STOPPED_RELAUNCH  # not taken for dead: its supervisor still beats
        # Redis: the same message ran elsewhere; RabbitMQ: a new try, counted as a lost worker
        assert stuck.task_record.lost_count == (0 if broker == "redis" else 1)
        task_id = f"{dfk.run_id}.0.1"
        messages = [r.getMessage() for r in caplog.records]
        warned = [m for m in messages if "has been stopped for" in m and task_id in m]
        assert len(warned) == 2, messages
        assert warned[0].startswith("worker celeriac-w-") and (
            f"(SIGSTOP, a debugger, or a suspended job) while holding task {task_id} (hold); "
            f"if it is still stopped after {STOPPED_RELAUNCH:.0f}s the task runs on another "
            "worker") in warned[0]
        seconds = int(warned[0].split("has been stopped for ")[1].split("s")[0])
        assert STOPPED_WARN <= seconds < STOPPED_RELAUNCH
        if broker == "redis":
            assert warned[1].startswith(f"task {task_id} (hold) runs again on another worker: "
                                        "its worker celeriac-w-")
            assert warned[1].endswith("resumes it finishes the task too, and the first outcome "
                                      "counts")
        else:
            assert warned[1].startswith(f"task {task_id}: its worker celeriac-w-")
            assert "the task runs again as a new try, and if celeriac-w-" in warned[1]
            assert warned[1].endswith(" resumes its outcome is ignored")
        # resumed, the stopped worker finishes its copy: ignored, the value stays
        time.sleep(8)
        assert ledger.runs()["0"] == 2 and stuck.result() == 0
        assert hold(ledger.dir, 5, 0).result(timeout=30) == 10
        assert "stopped sending heartbeats" not in caplog.text
