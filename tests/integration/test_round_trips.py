"""What one task costs on the broker, read from Redis's MONITOR while real workers run tasks:
a worker hands in an outcome and acknowledges its message in one round trip, and workers
publish no task events while nothing listens (the per-hop budget of a chain:
benchmarks/README.md)."""

import json
import os
import threading
import time

import pytest
import redis

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


@python_app
def add_one(x):
    return x + 1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    celeriac.clear()
    dfk = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)],
                               run_dir=str(tmp_path_factory.mktemp("round_trips"))))
    with open(os.path.join(dfk.run_dir, "worker.json")) as f:
        client = redis.Redis.from_url(json.load(f)["broker_url"])
    assert add_one(add_one(0)).result(timeout=60) == 2  # workers up, the app's run time known
    yield dfk, client
    client.close()
    dfk.cleanup()
    celeriac.clear()


def _watch(client, work):
    """The commands Redis ran while ``work()`` ran, grouped per connection into round trips
    (a MULTI ... EXEC block is one); returns (what work returned, seconds, round trips)."""
    seen = []

    def listen():  # until our own marker: what ran before it is then all in ``seen``
        with client.monitor() as monitor:
            for command in monitor.listen():
                seen.append(command)
                if "monitor-off" in command["command"]:
                    return
    watcher = threading.Thread(target=listen, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 30  # until MONITOR is on: a fixed sleep missed a task's
    while not any("monitor-on" in c["command"] for c in seen):  # commands on a busy machine
        assert time.monotonic() < deadline, "Redis MONITOR never started"
        client.echo("monitor-on")
        time.sleep(0.05)
    start = time.monotonic()
    value = work()
    took = time.monotonic() - start
    # Stopping at the first command after work() returned cut off the last task's MULTI
    # block when this thread lagged (CI saw 19 of 20 acks): Redis runs this ECHO after every
    # command work() waited for, so MONITOR shows it after them.
    client.echo("monitor-off")
    watcher.join(10)
    assert not watcher.is_alive(), "Redis MONITOR never showed the end marker"
    trips, open_blocks = [], {}
    for command in seen:
        words, conn = command["command"].split(" "), command["client_port"]
        if words[0] == "MULTI":
            open_blocks[conn] = []
        elif words[0] == "EXEC":
            trips.append(open_blocks.pop(conn, []))
        elif conn in open_blocks:
            open_blocks[conn].append(words)
        else:
            trips.append([words])
    return value, took, trips


def _chain(n):
    fut = add_one(0)
    for _ in range(n - 1):
        fut = add_one(fut)
    return fut.result(timeout=120)


@pytest.mark.timeout(180)
def test_a_worker_hands_in_the_outcome_and_acknowledges_its_message_in_one_round_trip(run):
    _dfk, client = run
    value, _took, trips = _watch(client, lambda: _chain(20))
    assert value == 20
    acks = [t for t in trips if any(w[0] == "ZREM" and w[1] == "unacked_index" for w in t)]
    assert len(acks) == 20, acks
    assert all(any(w[0] == "RPUSH" and w[1].startswith("celeriac:results:") for w in t)
               for t in acks), acks
    deadline = time.monotonic() + 10
    while client.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.hlen("unacked") == 0, client.hkeys("unacked")


@pytest.mark.timeout(180)
def test_workers_publish_no_task_events_while_nothing_listens(run):
    _dfk, client = run
    value, took, trips = _watch(client, lambda: _chain(200))
    assert value == 200
    events = [t for t in trips if t[0][0] == "PUBLISH" and t[0][1].startswith("/0.celeryev/")]
    # one probe a second, at most, from each worker and from the orchestrator
    assert len(events) <= 3 * (took + 2), (len(events), took)
