"""Cancelling tasks on real workers: AppFuture.cancel() for a waiting, a queued and a running
task, and revokes sent with Celery's remote control (Flower's HTTP API, before any worker is
up). A cancelled task ends cancelled and is never retried; its dependents fail."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import CancelledError

import pytest
from services import flower, get_json

import celeriac
from celeriac import Config, python_app
from celeriac.errors import DependencyError
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


def _mark_and_sleep(directory, key, seconds):
    """Leave ``<key>.started`` (with this process's pid), sleep, then ``<key>.finished``."""
    with open(os.path.join(directory, f"{key}.started"), "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    with open(os.path.join(directory, f"{key}.finished"), "a") as fh:
        fh.write("done\n")
    return key


mark_and_sleep = python_app(_mark_and_sleep, executors=["celery"])
mark_later = python_app(_mark_and_sleep, executors=["later"])
mark_prefork = python_app(_mark_and_sleep, executors=["prefork"])


@python_app(executors=["celery"])
def plus_one(x):
    return x + 1


@pytest.fixture(scope="module", params=["redis", "amqp"])
def dfk(request, tmp_path_factory):
    """One solo worker (so a second task waits in the queue), retries=2, and an executor
    with no workers until a test starts one by hand."""
    celeriac.clear()
    broker = request.getfixturevalue("rabbitmq") if request.param == "amqp" else None
    run_dir = str(tmp_path_factory.mktemp(request.param))
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=1),
                              CeleryExecutor(label="prefork", workers_per_node=1,
                                             pool="prefork", concurrency=2),
                              CeleryExecutor(label="later", provider=None)],
                             run_dir=run_dir, retries=2, broker=broker))
    yield d
    d.cleanup()
    celeriac.clear()


def runs(directory, key) -> int:
    """How many times the app body for ``key`` started."""
    path = os.path.join(directory, f"{key}.started")
    if not os.path.exists(path):
        return 0
    with open(path) as fh:
        return len(fh.read().split())


def wait_started(directory, key, timeout=60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runs(directory, key):
            with open(os.path.join(directory, f"{key}.started")) as fh:
                return int(fh.read().split()[0])
        time.sleep(0.05)
    raise AssertionError(f"{key} never started")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][:1] != "Z"
    except OSError:
        return False


def assert_stopped_and_not_retried(directory, key, pid, fut, seconds):
    """The process running ``key`` is gone, it never finishes and never runs again."""
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "the process running the cancelled task is still there"
    time.sleep(seconds + 3)  # longer than the task would have taken
    assert not os.path.exists(os.path.join(directory, f"{key}.finished"))
    assert runs(directory, key) == 1  # retries=2, yet never retried
    assert fut.cancelled() and fut.task_status() == "cancelled"


@pytest.mark.timeout(120)
def test_a_waiting_task_is_cancelled_and_never_runs(dfk, tmp_path):
    d = str(tmp_path)
    upstream = mark_and_sleep(d, "upstream", 1)
    waiting = mark_and_sleep(d, upstream, 0)
    dependent = plus_one(waiting)
    assert waiting.cancel() is True
    assert waiting.cancelled()
    with pytest.raises(CancelledError):
        waiting.result(timeout=1)
    assert upstream.result(timeout=60) == "upstream"
    with pytest.raises(DependencyError) as info:
        dependent.result(timeout=60)
    assert isinstance(info.value.__cause__, CancelledError)
    assert plus_one(1).result(timeout=60) == 2  # the worker has had every chance to run it
    assert sorted(os.listdir(d)) == ["upstream.finished", "upstream.started"]


@pytest.mark.timeout(120)
def test_a_queued_task_is_revoked_and_never_runs(dfk, tmp_path):
    d = str(tmp_path)
    busy = mark_and_sleep(d, "busy", 4)      # the one worker runs this ...
    wait_started(d, "busy")
    queued = mark_and_sleep(d, "queued", 0)  # ... while this waits behind it
    dependent = plus_one(queued)
    time.sleep(0.5)  # sent to the broker by now
    assert queued.cancel() is True and queued.cancelled()
    assert busy.result(timeout=60) == "busy"
    with pytest.raises(DependencyError):
        dependent.result(timeout=60)
    assert plus_one(2).result(timeout=60) == 3
    assert runs(d, "queued") == 0


@pytest.mark.timeout(120)
def test_a_running_task_is_stopped_and_its_dependent_fails(dfk, tmp_path):
    d = str(tmp_path)
    running = mark_and_sleep(d, "running", 8)
    dependent = plus_one(running)
    pid = wait_started(d, "running")
    assert running.cancel() is True
    with pytest.raises(CancelledError):
        running.result(timeout=1)
    with pytest.raises(DependencyError):
        dependent.result(timeout=60)
    assert_stopped_and_not_retried(d, "running", pid, running, 8)
    assert plus_one(3).result(timeout=60) == 4  # the pool is whole again


@pytest.mark.timeout(120)
def test_a_running_task_on_a_prefork_pool_is_stopped_and_the_worker_lives_on(dfk, tmp_path):
    d = str(tmp_path)
    running = mark_prefork(d, "pool", 8)
    pid = wait_started(d, "pool")
    assert running.cancel() is True
    assert_stopped_and_not_retried(d, "pool", pid, running, 8)
    assert mark_prefork(d, "next", 0).result(timeout=60) == "next"
    with open(os.path.join(d, "next.started")) as fh:
        assert int(fh.read().split()[0]) != pid  # a new pool process took over


def _post(url: str) -> dict:
    import json
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _flower_up(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            get_json(f"{base}/api/workers")
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("Flower never answered")


@pytest.mark.timeout(180)
def test_flower_terminate_ends_a_running_task_cancelled_never_retried(dfk, tmp_path):
    d = str(tmp_path)
    with flower(os.path.join(dfk.run_dir, "worker.json")) as base:
        _flower_up(base)
        running = mark_and_sleep(d, "flower", 8)
        pid = wait_started(d, "flower")
        celery_id = f"{dfk.run_id}.{running.tid}.1"
        _post(f"{base}/api/task/revoke/{celery_id}?terminate=true")
        with pytest.raises(CancelledError):
            running.result(timeout=30)
        assert_stopped_and_not_retried(d, "flower", pid, running, 8)
    assert plus_one(4).result(timeout=60) == 5


@pytest.mark.timeout(180)
def test_a_revoke_sent_before_any_worker_is_up_is_not_lost(dfk, tmp_path):
    d = str(tmp_path)
    run_file = os.path.join(dfk.run_dir, "worker.json")
    revoked = mark_later(d, "revoked", 0)
    time.sleep(0.5)  # queued on the broker; no worker serves 'later' yet
    with flower(run_file) as base:
        _flower_up(base)
        _post(f"{base}/api/task/revoke/{dfk.run_id}.{revoked.tid}.1")
        with pytest.raises(CancelledError):
            revoked.result(timeout=30)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "worker", "--run-file", run_file,
         "--executor", "later", "--processes", "1"],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),  # this module's apps
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert mark_later(d, "after", 0).result(timeout=60) == "after"
        assert runs(d, "revoked") == 0 and revoked.task_status() == "cancelled"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


@python_app(executors=["celery"])
def quick_mark(directory, key):
    with open(os.path.join(directory, f"{key}.started"), "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return key


@pytest.mark.timeout(120)
def test_a_call_packed_with_others_is_skipped_and_the_others_run(dfk, tmp_path):
    d = str(tmp_path)
    link = dfk.executors["celery"]._link
    assert quick_mark(d, "warm").result(timeout=60) == "warm"  # measures its run time
    busy = mark_and_sleep(d, "busy", 3)
    wait_started(d, "busy")
    messages, calls = link.stats["messages"], link.stats["calls"]
    burst = {i: quick_mark(d, f"k{i}") for i in range(40)}
    time.sleep(0.5)  # sent, packed, while the one worker is busy
    assert link.stats["messages"] - messages < link.stats["calls"] - calls  # really packed
    assert burst[5].cancel() is True
    assert busy.result(timeout=60) == "busy"
    assert {i: f.result(timeout=60) for i, f in burst.items() if i != 5} == {
        i: f"k{i}" for i in burst if i != 5}
    assert burst[5].cancelled() and runs(d, "k5") == 0
