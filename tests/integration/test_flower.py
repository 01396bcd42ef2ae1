"""Flower, started with `celeriac flower`, lists the run's workers and each task under its
app's name, on the embedded Redis and on RabbitMQ (Celery's events travel over either)."""

import os
import time

import pytest
from services import flower, get_json

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


@python_app
def triple(x):
    return 3 * x


@python_app
def odd_only(x):
    if x % 2 == 0:
        raise ValueError(f"{x} is even")
    return x


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def any_broker_dfk(request, tmp_path_factory):
    """A DFK on the embedded Redis, or on the session's test RabbitMQ."""
    broker = request.getfixturevalue("rabbitmq") if request.param == "rabbitmq" else None
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)],
                             broker=broker, run_dir=str(tmp_path_factory.mktemp("flower"))))
    yield d
    d.cleanup()
    celeriac.clear()


@pytest.mark.timeout(150)
def test_flower_sees_workers_and_tasks_by_app_name(any_broker_dfk):
    dfk = any_broker_dfk
    with flower(os.path.join(dfk.run_dir, "worker.json")) as base:
        deadline = time.monotonic() + 60
        workers = {}
        while time.monotonic() < deadline and not workers:
            try:
                workers = get_json(f"{base}/api/workers?refresh=1")
            except OSError:
                time.sleep(0.5)
        assert any(name.startswith("celeriac-celery-") for name in workers)
        assert [triple(i).result(timeout=60) for i in range(3)] == [0, 3, 6]
        tasks = {}
        while time.monotonic() < deadline:
            tasks = get_json(f"{base}/api/tasks")
            done = [t for t in tasks.values()
                    if t.get("name") == "triple" and t.get("state") == "SUCCESS"]
            if len(done) == 3:
                break
            time.sleep(0.5)
        assert sorted(t["result"] for t in done) == ["0", "3", "6"], tasks

        # Short calls in a burst share messages; one with a failed call shows as FAILURE.
        odd_only(1).result(timeout=60)
        burst = [odd_only(x) for x in range(1, 41)]
        for f in burst:
            f.exception(timeout=60)
        packed = []
        while time.monotonic() < deadline:
            packed = [t for t in get_json(f"{base}/api/tasks").values()
                      if t.get("name") == "odd_only" and "calls]" in (t.get("args") or "")]
            if packed and all(t.get("state") in ("SUCCESS", "FAILURE") for t in packed):
                break
            time.sleep(0.5)
        assert packed and all(t["state"] == "FAILURE" for t in packed), packed
        assert "calls failed" in packed[0]["exception"]

        # A failing call's traceback in Flower names this file, the line and its source.
        odd_only(2).exception(timeout=60)
        failed = []
        while time.monotonic() < deadline and not failed:
            failed = [t for t in get_json(f"{base}/api/tasks").values()
                      if t.get("name") == "odd_only" and t.get("state") == "FAILURE"
                      and t.get("args") == "(2,)"]
            time.sleep(0.5)
        assert failed, "Flower never showed odd_only(2) as failed"
        line = odd_only.func.__code__.co_firstlineno + 3
        assert (f'File "{__file__}", line {line}, in odd_only\n'
                '    raise ValueError(f"{x} is even")') in failed[0]["traceback"], failed[0]
