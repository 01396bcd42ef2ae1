"""The orchestrator publishes a Celery ``task-sent`` event for each message it sends while an
event consumer listens on the run's broker (a plain ``celery flower``, ``celery events``),
decoded by Celery's own receiver, and publishes nothing while nobody listens."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis
from services import get_json

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor, ThreadPoolExecutor
from celeriac.orchestrator.sent_events import CHECK_SECONDS

pytestmark = pytest.mark.integration


@python_app(executors=["threads"])
def seed(x):
    return x


@python_app(executors=["by_hand"])
def plus_one(x):
    return x + 1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A DFK whose ``by_hand`` executor has no workers (its tasks stay queued) and whose
    ``seed`` tasks run in threads; plus a client of its broker."""
    celeriac.clear()
    dfk = celeriac.load(Config([ThreadPoolExecutor(label="threads", max_threads=2),
                                CeleryExecutor(label="by_hand", provider=None)],
                               run_dir=str(tmp_path_factory.mktemp("sent_events"))))
    with open(os.path.join(dfk.run_dir, "worker.json")) as f:
        broker = json.load(f)["broker_url"]
    client = redis.Redis.from_url(broker)
    yield dfk, broker, client
    client.close()
    dfk.cleanup()
    celeriac.clear()


def _publishes(client) -> int:
    """PUBLISH commands the broker has run so far."""
    return client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0)


def _until(check, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _send_child(dfk):
    """seed(41) done in a thread, then plus_one of it sent to the queue nobody serves;
    returns (parent's Celery id, child's Celery id)."""
    parent = seed(41)
    parent.result(timeout=30)
    child = plus_one(parent)
    return f"{dfk.run_id}.{parent.tid}.1", f"{dfk.run_id}.{child.tid}.1"


@pytest.mark.timeout(120)
def test_nothing_is_published_while_nobody_listens(run):
    dfk, _broker, client = run
    _until(lambda: client.pubsub_numpat() == 0, what="no pattern subscriber")
    before = _publishes(client)
    for _ in range(3):
        _send_child(dfk)
        time.sleep(CHECK_SECONDS)  # each batch after a fresh check
    assert _publishes(client) == before
    assert dfk.executors["by_hand"]._link.sent_events.published == 0

    # A pattern subscriber that is no event consumer (a worker's remote-control queue): one
    # event of the burst is published, as a probe that nobody hears, and no other.
    pubsub = client.pubsub()
    pubsub.psubscribe("/0.celery.pidbox")
    try:
        _until(lambda: client.pubsub_numpat() == 1, what="the pidbox subscriber")
        parents = [seed(i) for i in range(50)]
        for p in parents:
            p.result(timeout=30)
        time.sleep(CHECK_SECONDS)
        before = _publishes(client)
        children = [plus_one(p) for p in parents]
        _until(lambda: not dfk.executors["by_hand"]._link._outbox, what="the burst sent")
        time.sleep(0.5)
        assert len(children) == 50 and _publishes(client) - before == 1
    finally:
        pubsub.close()


@pytest.mark.timeout(120)
def test_celery_event_receiver_decodes_task_sent(run):
    """The contract with kombu and Celery: their own EventReceiver decodes the events."""
    from celery import Celery
    dfk, broker, client = run
    app = Celery("receiver", broker=broker)
    got = []
    conn = app.connection_for_read()

    def sent(event):
        got.append(event)
        receiver.should_stop = True

    receiver = app.events.Receiver(conn, handlers={"task-sent": sent})

    def consume():
        try:
            receiver.capture(timeout=60, wakeup=False)
        except Exception as e:  # socket timeout etc.: the assertions below say what failed
            got.append(e)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        _until(lambda: client.pubsub_numpat() >= 1, what="the receiver's subscription")
        time.sleep(CHECK_SECONDS + 0.2)
        parent_id, child_id = _send_child(dfk)
        thread.join(60)
    finally:
        receiver.should_stop = True
        conn.release()
    assert len(got) == 1 and isinstance(got[0], dict), got
    event = got[0]
    assert (event["type"], event["uuid"], event["name"]) == ("task-sent", child_id, "plus_one")
    assert (event["parent_id"], event["root_id"]) == (parent_id, parent_id)
    assert event["queue"] == dfk.executors["by_hand"].queue
    assert event["hostname"].endswith(dfk.run_id)
    assert event["args"] == "(41,)"  # the resolved argument, as sent


@pytest.mark.timeout(180)
def test_plain_flower_shows_a_queued_task_by_app_name_with_its_parent(run):
    dfk, broker, client = run
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _until(lambda: client.pubsub_numpat() == 0, what="no pattern subscriber")
    # The user's own Flower: plain `celery flower`, the broker URL (with its password) in
    # the environment, not on the command line.
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "flower", f"--port={port}", "--address=127.0.0.1"],
        env=dict(os.environ, CELERY_BROKER_URL=broker, FLOWER_UNAUTHENTICATED_API="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: client.pubsub_numpat() >= 1, timeout=60, what="Flower's subscription")
        time.sleep(CHECK_SECONDS + 0.2)
        parent_id, child_id = _send_child(dfk)
        base = f"http://127.0.0.1:{port}"

        def shown():
            try:
                return get_json(f"{base}/api/tasks").get(child_id)
            except OSError:
                return None
        task = _until(shown, timeout=60, what=f"Flower to show {child_id}")
        assert task["name"] == "plus_one"
        assert task["state"] == "PENDING"      # sent, never received: no worker serves it
        assert (task["parent_id"], task["root_id"]) == (parent_id, parent_id)
        assert task["client"].endswith(dfk.run_id)
    finally:
        flower.terminate()
        try:
            flower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait(timeout=30)
