"""What one task costs on the broker, read from Redis's MONITOR while real workers run tasks:
the orchestrator sends a chain's next step in the round trip that waits for outcomes, and
workers publish no task events while nothing listens (the per-hop budget of a chain:
benchmarks/README.md)."""

import json
import os
import re
import threading
import time
from concurrent.futures import Future

import pytest
import redis

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


@python_app
def add_one(x):
    return x + 1


@python_app
def plus(x, zero):
    return x + 1 + zero


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    celeriac.clear()
    dfk = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)],
                               run_dir=str(tmp_path_factory.mktemp("round_trips"))))
    with open(os.path.join(dfk.run_dir, "worker.json")) as f:
        client = redis.Redis.from_url(json.load(f)["broker_url"])
    # workers up, the apps' run times known
    assert plus(add_one(add_one(0)), 0).result(timeout=60) == 3
    yield dfk, client
    client.close()
    dfk.cleanup()
    celeriac.clear()


def _watch(client, work):
    """The commands Redis ran while ``work()`` ran, grouped per connection into round trips
    (a MULTI ... EXEC block is one); returns (what work returned, seconds, round trips, the
    commands as MONITOR gave them)."""
    seen = []

    def listen():  # until the marker sent after work(): it reads all that ran before it
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
    client.echo("monitor-off")
    watcher.join(10)
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
    return value, took, trips, seen


def _chain(n):
    """n steps, each sent when the one before has finished: a step that waited for two
    futures when it was submitted is never chained (it does not wait for one task alone)."""
    fut = add_one(0)
    for _ in range(n - 1):
        zero = Future()
        fut = plus(fut, zero)
        zero.set_result(0)
    return fut.result(timeout=120)


@pytest.mark.timeout(180)
def test_a_chain_of_one_app_goes_to_a_worker_in_one_message(run):
    """Steps that wait for the step before alone travel with it: one LPUSH for 20 steps,
    one reservation, one outcome (all 20 results) with its acknowledgement."""
    _dfk, client = run
    gate = Future()  # every step is waiting when the first can go

    def work():
        fut = add_one(gate)
        for _ in range(19):
            fut = add_one(fut)
        gate.set_result(0)
        return fut.result(timeout=120)
    value, _took, trips, _seen = _watch(client, work)
    assert value == 20
    messages = [w[:2] for t in trips for w in t if w[0] == "LPUSH"]
    assert len(messages) == 1, messages
    outcomes = [w for t in trips for w in t
                if w[0] == "RPUSH" and w[1].startswith("celeriac:results:")]
    assert len(outcomes) == 1


@pytest.mark.timeout(180)
def test_a_worker_hands_in_the_outcome_and_acknowledges_its_message_in_one_round_trip(run):
    _dfk, client = run
    value, _took, trips, _seen = _watch(client, lambda: _chain(20))
    assert value == 20
    acks = [t for t in trips if any(w[0] == "ZREM" and w[1] == "unacked_index" for w in t)]
    # Every acknowledgement went with an outcome. (19 of 20 were seen in some runs while
    # the watcher stopped reading at the first command after the chain, with the last
    # task's still unread; it now reads up to a marker sent after.) And no message is left
    # unacknowledged, which would run it again.
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
    value, took, trips, _seen = _watch(client, lambda: _chain(200))
    assert value == 200
    events = [t for t in trips if t[0][0] == "PUBLISH" and t[0][1].startswith("/0.celeryev/")]
    # one probe a second, at most, from each worker and from the orchestrator
    assert len(events) <= 3 * (took + 2), (len(events), took)


_CARRY = {"LPUSH", "ZADD", "HSET", "ZREM", "HDEL", "RPUSH"}  # commands that carry a message


@pytest.mark.timeout(180)
def test_the_orchestrator_sends_a_chains_next_step_with_its_wait_for_outcomes(run):
    """Four round trips a hop (was five): the orchestrator's send and its BLPOP in one, the
    worker's BRPOP, its reservation (kombu's MULTI), its outcome with the ack."""
    dfk, client = run
    value, _took, _trips, seen = _watch(client, lambda: _chain(20))
    assert value == 20
    task_id = re.compile(re.escape(dfk.run_id) + r"\.\d+\.\d+")
    by_port: dict = {}   # connection -> its commands, in order: [(verb, ids named)]
    ports: dict = {}     # message id -> the connections whose commands name it
    for command in seen:
        text, port = command["command"], command["client_port"]
        verb = text.split(" ", 1)[0]  # (held lists, SET by heartbeats, name ids too)
        ids = set(task_id.findall(text)) if verb in _CARRY else set()
        by_port.setdefault(port, []).append((verb, ids))
        for i in ids:
            ports.setdefault(i, set()).add(port)
    sent = [i for i in ports if any(verb == "LPUSH" and i in ids
                                    for p in ports[i] for verb, ids in by_port[p])]
    hops = sorted(sent, key=lambda i: int(i.split(".")[-2]))[1:]  # the first: by the sender
    assert len(hops) == 19, sorted(ports)
    for message in hops:
        # The orchestrator sends it and then, in the same write, waits for outcomes (LPUSH,
        # BLPOP); a worker reserves it (ZADD, HSET) and acknowledges it (ZREM, HDEL).
        orchestrator, = [p for p in ports[message]
                         if any(v == "LPUSH" and message in ids for v, ids in by_port[p])]
        verbs = [v for v, _ids in by_port[orchestrator]]
        at = next(k for k, (v, ids) in enumerate(by_port[orchestrator])
                  if v == "LPUSH" and message in ids)
        assert verbs[at + 1] == "BLPOP", verbs[at:at + 3]
        mine = [v for p in ports[message] - {orchestrator} for v, ids in by_port[p]
                if message in ids]
        assert {"ZADD", "HSET", "ZREM", "HDEL"} <= set(mine), mine
