"""Pool control of a `celeriac worker` started by hand: Flower's grow/shrink buttons (through
its HTTP API) and `--autoscale MAX,MIN` start and stop real worker processes, which take
tasks, and the executor's count of capacity follows."""

import os
import time
import urllib.error
import urllib.request

import pytest
from services import flower, get_json, start_worker, stop, wait_until

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


@python_app
def meet(rendezvous, expected):
    """Wait until ``expected`` tasks run at once (each leaves a file), then say where."""
    import os
    import time

    from celery import current_task
    host = current_task.request.hostname
    open(os.path.join(rendezvous, host), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(rendezvous)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return host, len(os.listdir(rendezvous))


@python_app
def where(seconds):
    import time

    from celery import current_task
    time.sleep(seconds)
    return current_task.request.hostname


def ready_workers(ex):
    return [w for w in ex._link.transport.live_workers() if w.queue == ex.queue and w.ready]


def post(url):
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_hand_worker(run_dir, label, *options):
    return start_worker("--run-file", os.path.join(run_dir, "worker.json"), "--executor", label,
                        "--prefetch-multiplier", "1", *options)


@pytest.mark.timeout(180)
def test_flower_grows_and_shrinks_the_pool_of_a_worker_started_by_hand(tmp_path):
    ex = CeleryExecutor(label="hand", provider=None)
    with celeriac.load(Config([ex], run_dir=str(tmp_path / "runs"), strategy_period=0.5)) \
            as dfk:
        worker = start_hand_worker(dfk.run_dir, "hand", "--processes", "1")
        try:
            with flower(os.path.join(dfk.run_dir, "worker.json")) as base:
                wait_until(lambda: len(ready_workers(ex)) == 1, 60, "the worker connects")
                [name] = [w.name for w in ready_workers(ex)]

                def flower_knows():
                    try:
                        return name in get_json(f"{base}/api/workers?refresh=1")
                    except OSError:
                        return False
                wait_until(flower_knows, 60, "Flower lists the worker")

                status, body = post(f"{base}/api/worker/pool/grow/{name}?n=1")
                assert status == 200, body
                assert "Growing" in body
                wait_until(lambda: len(ready_workers(ex)) == 2, 60, "a second process joins")
                wait_until(lambda: ex.capacity.by_hand == 2, 10, "the strategy counts 2 slots")

                # Both processes take a task at the same time: each waits for the other.
                rendezvous = tmp_path / "meet"
                rendezvous.mkdir()
                results = [f.result(timeout=60) for f in
                           [meet(str(rendezvous), 2) for _ in range(2)]]
                assert {count for _host, count in results} == {2}
                assert len({host for host, _count in results}) == 2

                status, body = post(f"{base}/api/worker/pool/shrink/{name}?n=1")
                assert status == 200, body
                wait_until(lambda: len(ready_workers(ex)) == 1, 60, "the pool shrinks to one")
                wait_until(lambda: ex.capacity.by_hand == 1, 10, "the strategy counts 1 slot")
                assert worker.poll() is None     # the supervisor did not take it as a death
                assert where(0).result(timeout=60)
        finally:
            stop(worker)


@pytest.mark.timeout(180)
def test_autoscale_grows_with_the_queue_and_shrinks_when_it_empties(tmp_path):
    ex = CeleryExecutor(label="auto", provider=None)
    with celeriac.load(Config([ex], run_dir=str(tmp_path / "runs"), strategy_period=0.5)) \
            as dfk:
        worker = start_hand_worker(dfk.run_dir, "auto", "--autoscale", "3,1",
                              "--autoscale-keepalive", "2")
        try:
            wait_until(lambda: len(ready_workers(ex)) == 1, 60, "the first process connects")
            time.sleep(1.5)
            assert len(ready_workers(ex)) == 1   # MIN while the queue is empty
            wait_until(lambda: ex.capacity.by_hand == 3, 10,
                       "the strategy counts the pool at its maximum")
            futures = [where(1.5) for _ in range(12)]
            most = 0
            while not all(f.done() for f in futures):
                most = max(most, len(ready_workers(ex)))
                time.sleep(0.2)
            hosts = [f.result(timeout=1) for f in futures]
            assert most == 3                     # grew to MAX, never past it
            assert len(set(hosts)) >= 2          # the processes it started took tasks
            wait_until(lambda: len(ready_workers(ex)) == 1, 60, "it shrinks back to MIN")
            assert worker.poll() is None
        finally:
            stop(worker)
