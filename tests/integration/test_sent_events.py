"""The orchestrator publishes a Celery ``task-sent`` event for each message it sends while an
event consumer listens on the run's broker (a plain ``celery flower``, ``celery events``),
decoded by Celery's own receiver, and publishes nothing while nobody listens; on the embedded
Redis and on RabbitMQ."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis
from services import RMQ_ENV, get_json, stop, wait_until

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


class _Redis:
    """What the tests ask of the embedded Redis."""

    def __init__(self, url):
        self.client = redis.Redis.from_url(url)

    def consumers(self) -> int:
        """Pattern subscribers (event consumers, and workers' remote-control queues)."""
        return self.client.pubsub_numpat()

    def published(self, dfk) -> int:
        """PUBLISH commands the broker has run so far."""
        return self.client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0)

    @contextlib.contextmanager
    def no_event_consumer(self):
        """A pattern subscriber that is no event consumer (a worker's remote-control queue)."""
        pubsub = self.client.pubsub()
        pubsub.psubscribe("/0.celery.pidbox")
        try:
            wait_until(lambda: self.consumers() == 1, what="the pidbox subscriber")
            yield
        finally:
            pubsub.close()

    def close(self):
        self.client.close()


class _RabbitMQ:
    """What the tests ask of the test RabbitMQ (``rabbitmqctl`` lists its bindings)."""

    def __init__(self, url):
        from kombu import Connection
        self.conn = Connection(url, transport="pyamqp")

    def consumers(self) -> int:
        """Queues bound to Celery's event exchange for every event (as Flower binds one)."""
        out = subprocess.run(
            ["rabbitmqctl", "-q", "-n", f"{RMQ_ENV['RMQ_NODE']}@localhost", "list_bindings",
             "source_name", "routing_key"], capture_output=True, text=True, timeout=60).stdout
        return sum(line.split("\t") == ["celeryev", "#"] for line in out.splitlines())

    def published(self, dfk) -> int:
        """Events the run's link has published so far."""
        return dfk.executors["by_hand"]._link.sent_events.published

    @contextlib.contextmanager
    def no_event_consumer(self):
        """Celery's event exchange, with a queue bound to workers' events only (a worker's
        gossip): the exchange exists, but no queue takes a task-sent event."""
        channel = self.conn.channel()
        channel.exchange_declare("celeryev", "topic", durable=True, auto_delete=False)
        queue = channel.queue_declare("", exclusive=True, auto_delete=True)[0]
        channel.queue_bind(queue, "celeryev", "worker.#")
        try:
            yield
        finally:
            channel.close()

    def close(self):
        self.conn.release()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def run(request, tmp_path_factory):
    """A DFK whose ``by_hand`` executor has no workers (its tasks stay queued) and whose
    ``seed`` tasks run in threads, on the embedded Redis or the session's test RabbitMQ;
    plus its broker's URL and what the tests ask of that broker."""
    rabbit = request.param == "rabbitmq"
    celeriac.clear()
    dfk = celeriac.load(Config([ThreadPoolExecutor(label="threads", max_threads=2),
                                CeleryExecutor(label="by_hand", provider=None)],
                               broker=request.getfixturevalue("rabbitmq") if rabbit else None,
                               run_dir=str(tmp_path_factory.mktemp("sent_events"))))
    with open(os.path.join(dfk.run_dir, "worker.json")) as f:
        broker = json.load(f)["broker_url"]
    ask = (_RabbitMQ if rabbit else _Redis)(broker)
    yield dfk, broker, ask
    ask.close()
    dfk.cleanup()
    celeriac.clear()


def _send_child(dfk):
    """seed(41) done in a thread, then plus_one of it sent to the queue nobody serves;
    returns (parent's Celery id, child's Celery id)."""
    parent = seed(41)
    parent.result(timeout=30)
    child = plus_one(parent)
    return f"{dfk.run_id}.{parent.tid}.1", f"{dfk.run_id}.{child.tid}.1"


@pytest.mark.timeout(120)
def test_nothing_is_published_while_nobody_listens(run):
    dfk, _broker, ask = run
    wait_until(lambda: ask.consumers() == 0, what="no event consumer")
    if isinstance(ask, _Redis):  # no pattern subscriber at all: nothing to probe
        before = ask.published(dfk)
        for _ in range(3):
            _send_child(dfk)
            time.sleep(CHECK_SECONDS)  # each batch after a fresh check
        assert ask.published(dfk) == before
        assert dfk.executors["by_hand"]._link.sent_events.published == 0

    # A listener that is no event consumer (Redis: a worker's remote-control pattern;
    # RabbitMQ: the event exchange, with workers' events bound only): one event of the burst
    # is published, as a probe that nobody hears, and no other.
    link = dfk.executors["by_hand"]._link
    with ask.no_event_consumer():
        parents = [seed(i) for i in range(50)]
        for p in parents:
            p.result(timeout=30)
        time.sleep(CHECK_SECONDS)
        before, calls = ask.published(dfk), link.stats["calls"]
        children = [plus_one(p) for p in parents]
        wait_until(lambda: not link._outbox, what="the burst sent")
        time.sleep(0.5)
        assert len(children) == 50 and ask.published(dfk) - before == 1
    # Calls of an app whose run time is unknown wait a few seconds while no worker serves
    # their queue (FirstBurst): sent later, they would be published in the next test. (The
    # sender takes the held calls out and puts them back every few ms: an empty ``_held``
    # does not say they went.)
    wait_until(lambda: link.stats["calls"] - calls == 50, what="the held calls sent",
               timeout=30)


@pytest.mark.timeout(120)
def test_celery_event_receiver_decodes_task_sent(run):
    """The contract with kombu and Celery: their own EventReceiver decodes the events."""
    from celery import Celery
    dfk, broker, ask = run
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
        wait_until(lambda: ask.consumers() >= 1, what="the receiver's subscription")
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
    dfk, broker, ask = run
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    wait_until(lambda: ask.consumers() == 0, what="no event consumer")
    # The user's own Flower: plain `celery flower`, the broker URL (with its password) in
    # the environment, not on the command line.
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "flower", f"--port={port}", "--address=127.0.0.1"],
        env=dict(os.environ, CELERY_BROKER_URL=broker, FLOWER_UNAUTHENTICATED_API="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ask.consumers() >= 1, timeout=60, what="Flower's subscription")
        time.sleep(CHECK_SECONDS + 0.2)
        parent_id, child_id = _send_child(dfk)
        base = f"http://127.0.0.1:{port}"

        def shown():
            try:
                return get_json(f"{base}/api/tasks").get(child_id)
            except OSError:
                return None
        task = wait_until(shown, timeout=60, what=f"Flower to show {child_id}")
        assert task["name"] == "plus_one"
        assert task["state"] == "PENDING"      # sent, never received: no worker serves it
        assert (task["parent_id"], task["root_id"]) == (parent_id, parent_id)
        assert task["client"].endswith(dfk.run_id)
    finally:
        stop(flower)
