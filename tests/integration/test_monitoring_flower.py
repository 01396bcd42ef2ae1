"""`celeriac flower` shows every task of its run, sent before it started or still waiting,
linked to what it waited for; it exits with a line when the run ends, and on SIGTERM even
after the broker is gone."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from services import get_json

import celeriac
from celeriac import Config, python_app
from celeriac.orchestrator.executors.celery import CeleryExecutor

pytestmark = pytest.mark.integration


@python_app
def seed(x):
    return x


@python_app
def plus_one(x):
    return x + 1


@python_app
def broken(x):
    raise ValueError(f"no good: {x}")


@python_app
def nap(seconds):
    import time
    time.sleep(seconds)
    return seconds


def _load(run_dir, **options):
    celeriac.clear()
    return celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)],
                                run_dir=str(run_dir), **options))


def _start_flower(dfk):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "flower", "--run-file",
         os.path.join(dfk.run_dir, "worker.json"), "--port", str(port)],
        env=dict(os.environ, FLOWER_UNAUTHENTICATED_API="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def _tasks(base, deadline, done):
    """Flower's /api/tasks once ``done(tasks)`` holds (or the deadline passes)."""
    tasks = {}
    while time.monotonic() < deadline:
        try:
            tasks = get_json(f"{base}/api/tasks")
        except OSError:
            time.sleep(0.5)
            continue
        if done(tasks):
            break
        time.sleep(0.5)
    return tasks


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


@pytest.mark.timeout(180)
def test_flower_shows_tasks_sent_before_it_started_and_the_run_ending(tmp_path):
    dfk = _load(tmp_path)
    proc = None
    try:
        first = seed(1)
        second = plus_one(first)
        assert second.result(timeout=60) == 2
        assert isinstance(broken(3).exception(timeout=60), ValueError)
        slow = nap(6)
        waiting = plus_one(slow)  # waits for `slow` while Flower starts
        run_id = dfk.run_id
        uuid = {f.tid: f"{run_id}.{f.tid}.1" for f in (first, second, slow, waiting)}

        proc, base = _start_flower(dfk)
        deadline = time.monotonic() + 60
        tasks = _tasks(base, deadline, lambda t: uuid[waiting.tid] in t)
        # Sent (and finished) before Flower started: there, under the app's name.
        assert tasks[uuid[first.tid]]["name"] == "seed", tasks
        assert tasks[uuid[first.tid]]["state"] == "SUCCESS"
        failed = [t for t in tasks.values() if t["name"] == "broken"]
        assert failed and failed[0]["state"] == "FAILURE"
        assert "no good: 3" in failed[0]["exception"]
        # A task waiting for its dependency shows as waiting, linked to it.
        assert tasks[uuid[waiting.tid]]["state"] == "WAITING"
        info = get_json(f"{base}/api/task/info/{uuid[second.tid]}")
        assert info["parent_id"] == uuid[first.tid] and info["root_id"] == uuid[first.tid]
        assert uuid[second.tid] in get_json(f"{base}/api/task/info/{uuid[first.tid]}")[
            "children"]

        assert waiting.result(timeout=60) == 7
        # Sent while Flower watched: the workers' events and the run's links, merged.
        def merged(t):
            task = t.get(uuid[waiting.tid], {})
            return task.get("state") == "SUCCESS" and task.get("parent_id") == uuid[slow.tid]
        tasks = _tasks(base, deadline, merged)
        assert merged(tasks), tasks[uuid[waiting.tid]]
        assert tasks[uuid[waiting.tid]]["worker"].startswith("celeriac-celery-")

        dfk.cleanup()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert f"celeriac flower: run {run_id} ended at" in err, err
    finally:
        dfk.cleanup()
        celeriac.clear()
        if proc is not None:
            _stop(proc)


@pytest.mark.timeout(120)
def test_flower_stops_on_sigterm_after_the_broker_is_gone(tmp_path):
    dfk = _load(tmp_path, monitoring=False)  # no database: only the broker tells the end
    proc = None
    try:
        assert seed(5).result(timeout=60) == 5
        proc, base = _start_flower(dfk)
        _tasks(base, time.monotonic() + 60, lambda t: True)  # Flower is up
        get_json(f"{base}/api/workers")
        dfk.cleanup()  # stops the embedded broker
        time.sleep(2)
        assert proc.poll() is None  # the run's end is not yet known: still serving
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert "celeriac flower: stopped (SIGTERM)" in err, err
    finally:
        dfk.cleanup()
        celeriac.clear()
        if proc is not None:
            _stop(proc)
