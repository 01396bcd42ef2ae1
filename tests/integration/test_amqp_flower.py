"""Flower, started with `celeriac flower`, on a run whose broker is RabbitMQ: it lists the
run's workers and each task under its app's name (Celery's events travel over AMQP)."""

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


@pytest.fixture(scope="module")
def dfk(rabbitmq, tmp_path_factory):
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)],
                             broker=rabbitmq, run_dir=str(tmp_path_factory.mktemp("amqp"))))
    yield d
    d.cleanup()
    celeriac.clear()


@pytest.mark.timeout(120)
def test_flower_on_rabbitmq_sees_the_workers_and_tasks_by_app_name(dfk):
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
        done = []
        while time.monotonic() < deadline:
            done = [t for t in get_json(f"{base}/api/tasks").values()
                    if t.get("name") == "triple" and t.get("state") == "SUCCESS"]
            if len(done) == 3:
                break
            time.sleep(0.5)
        assert sorted(t["result"] for t in done) == ["0", "3", "6"], done
