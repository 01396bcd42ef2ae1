"""Messages a worker takes straight off its queue while nobody listens to its task events
(celeriac.workers.follow_on), on the embedded Redis: a worker killed in the middle of one
loses nothing (the message waits in kombu's unacked table and runs elsewhere); while an
event consumer listens (Flower, ``celery events``), every message goes through Celery, so
it sees each one."""

import base64
import json
import os
import signal
import time

import pytest
import redis
from ledger import Figures, Ledger, mark
from services import wait_until

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator import sender
from celeriac.workers.follow_on import FOLLOW_ON_SECONDS
from celeriac.workers.transport import EVENTS_CHECK

CALLS, SECONDS = 6, 0.4


@python_app
def slow_double(ledger_dir, key, seconds):
    mark(ledger_dir, key)
    time.sleep(seconds)
    return 2 * key


@python_app
def plus_one(x):
    return x + 1


def _config(tmp_path) -> Config:
    return Config([CeleryExecutor(label="w", workers_per_node=1)],
                  run_dir=str(tmp_path / "runs"))


def _quiet_window() -> None:
    """Let the worker's window after its last unheard event pass: its next message goes
    through Celery (and its events say again whether anyone listens)."""
    time.sleep(FOLLOW_ON_SECONDS + EVENTS_CHECK)


def _takes(client) -> int:
    """Scripts the broker has run so far: each message a worker took straight off its
    queue is one (``celeriac.wire.redis_take``), and nothing else runs one."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


@pytest.mark.timeout(240)
def test_worker_killed_in_a_message_it_took_itself_loses_nothing(tmp_path):
    ledger = Ledger(tmp_path)
    with celeriac.load(_config(tmp_path)):
        assert plus_one(1).result(timeout=60) == 2  # the worker is up
        _quiet_window()
        # One call a message (a new app's first calls, and each too long to pack): the first
        # goes through Celery, the next ones straight off the queue, one as each ends.
        futs = {k: slow_double(ledger.dir, k, SECONDS) for k in range(CALLS)}
        wait_until(lambda: len(ledger.runs()) >= 3, timeout=60, what="the third call")
        [pid] = {int(name.split(".")[1]) for name in os.listdir(ledger.dir)}
        os.kill(pid, signal.SIGKILL)  # in the third call (0.8-1.2 s in: a message it took)
        figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=150)
        runs = ledger.runs()
    assert figures == Figures(submitted=CALLS, correct=CALLS, lost=0, ran_twice=1, hung=0)
    assert [k for k in futs if runs[str(k)] > 1] == [2]
    assert [futs[k].task_record.lost_count for k in futs] == [0, 0, 1, 0, 0, 0]


@pytest.mark.timeout(240)
def test_worker_told_to_stop_in_a_message_it_took_itself_ends_it_and_takes_no_more(tmp_path):
    """SIGTERM (Celery's warm shutdown) in the middle of a message taken straight off the
    queue: that call ends and hands in its outcome; the worker takes no other, so the rest
    run on the worker its supervisor starts next, once each."""
    ledger = Ledger(tmp_path)
    with celeriac.load(_config(tmp_path)):
        assert plus_one(1).result(timeout=60) == 2
        _quiet_window()
        futs = {k: slow_double(ledger.dir, k, SECONDS) for k in range(CALLS)}
        wait_until(lambda: len(ledger.runs()) >= 3, timeout=60, what="the third call")
        [pid] = {int(name.split(".")[1]) for name in os.listdir(ledger.dir)}
        os.kill(pid, signal.SIGTERM)
        figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=150)
        pids = {k: int(name.split(".")[1]) for name in os.listdir(ledger.dir)
                for k in [int(name.split(".")[0])]}
    assert figures == Figures(submitted=CALLS, correct=CALLS, lost=0, ran_twice=0, hung=0)
    assert [pids[k] == pid for k in range(CALLS)] == [True] * 3 + [False] * 3
    assert [futs[k].task_record.lost_count for k in futs] == [0] * CALLS


@pytest.mark.timeout(240)
def test_messages_go_through_celery_while_an_event_consumer_listens(tmp_path, monkeypatch):
    monkeypatch.setattr(sender, "pack_sizes", lambda queued, *args, **kwargs: [1] * queued)
    with celeriac.load(_config(tmp_path)) as dfk:
        with open(os.path.join(dfk.run_dir, "worker.json")) as f:
            client = redis.Redis.from_url(json.load(f)["broker_url"])
        assert plus_one(0).result(timeout=60) == 1
        _quiet_window()
        before = _takes(client)
        assert [f.result(timeout=60) for f in [plus_one(i) for i in range(40)]] == \
            list(range(1, 41))
        assert _takes(client) - before >= 30  # most of the 40 taken straight off the queue

        # An event consumer subscribes as Flower's does (every event of the exchange).
        listener = client.pubsub()
        listener.psubscribe("/0.celeryev/*")
        try:
            _quiet_window()
            before = _takes(client)
            assert [f.result(timeout=60) for f in [plus_one(i) for i in range(40)]] == \
                list(range(1, 41))
            assert _takes(client) == before  # each one through Celery
            heard = []
            while (message := listener.get_message(timeout=0.5)) is not None:
                if message["type"] == "pmessage":
                    envelope = json.loads(message["data"])  # kombu's, its body base64
                    body = json.loads(base64.b64decode(envelope["body"]))
                    # Celery's worker publishes task events in groups (task.multi): a list
                    heard += [event["type"] for event in (body if isinstance(body, list)
                                                         else [body])]
            for kind in ("task-received", "task-started", "task-succeeded"):
                assert heard.count(kind) == 40, (kind, heard.count(kind))
        finally:
            listener.close()
            client.close()
