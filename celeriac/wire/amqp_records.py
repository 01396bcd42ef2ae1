"""The run's records on RabbitMQ behind the few Redis commands celeriac's record code uses.

The record modules (``alive``, ``deaths``, ``revokes``, ``runend``, the workers' liveness)
read and write keys with a handful of Redis commands. :class:`Records` gives them those
commands on the board (:mod:`celeriac.wire.amqp_board`): a write publishes the value under
the topic of its writer (``worker.<name>`` for a worker's alive, held and running keys, the
run's topic for the rest), a read looks in the reader's mirror. A hash field is the key
``<hash>#<field>``; the set of workers is the set of fresh alive keys. Values this process
wrote for its run (its record, revokes, end, deaths) are published again by
:meth:`Records.republish` every beat, so a reader that starts late has them. Queues are not
records: ``llen`` asks RabbitMQ, and a queued message cannot be picked out (``lrange`` is
empty): a revoked message still queued is skipped by the worker that gets it. ``pubsub``
hears a fanout exchange (Celery's remote-control broadcast: Flower's revokes).
"""

from __future__ import annotations

import json
import threading

from celeriac.wire.amqp_board import Board, Writer, run_topic, worker_topic
from celeriac.wire.keys import ALIVE_PREFIX, HELD_PREFIX, RUNNING_PREFIX, WORKERS_KEY

_WORKER_PREFIXES = (ALIVE_PREFIX, HELD_PREFIX, RUNNING_PREFIX)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Records:
    """Redis-shaped access to run ``run_id``'s records on the board of broker ``url``.

    Args:
        workers: also mirror every worker's values (the orchestrator); a worker's side
            mirrors only its run's.
    """

    def __init__(self, url: str, run_id: str, workers: bool = False):
        self.url, self.run_id = url, run_id
        self.writer = Writer(url)
        self.errors = self.writer.errors
        topics = [run_topic(run_id)] + (["worker.#"] if workers else [])
        self.board = Board(url, topics)
        self._owned: dict[str, tuple[str, float | None]] = {}  # run values to republish
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------
    def _topic(self, key: str) -> str:
        for prefix in _WORKER_PREFIXES:
            if key.startswith(prefix):
                return worker_topic(key[len(prefix):])
        return run_topic(self.run_id)

    def _write(self, values: dict, ttl: float | None) -> None:
        by_topic: dict[str, dict] = {}
        for key, value in values.items():
            topic = self._topic(key)
            by_topic.setdefault(topic, {})[key] = value
            if topic == run_topic(self.run_id):
                with self._lock:
                    if value is None:
                        self._owned.pop(key, None)
                    else:
                        self._owned[key] = (value, ttl)
        for topic, group in by_topic.items():
            self.writer.publish(topic, group, ttl)

    def set(self, key, value, px=None, ex=None):
        ttl = px / 1000 if px else ex
        self._write({_text(key): _text(value)}, ttl)
        return True

    def delete(self, *keys):
        self._write({_text(k): None for k in keys}, None)
        return len(keys)

    def hset(self, name, key=None, value=None, mapping=None):
        values = dict(mapping or {})
        if key is not None:
            values[key] = value
        self._write({f"{name}#{_text(k)}": _text(v) for k, v in values.items()}, None)
        return len(values)

    def hdel(self, name, *fields):
        return self.delete(*[f"{name}#{_text(f)}" for f in fields])

    def expire(self, key, seconds):
        return True  # run values go with the run; worker values are rewritten with a ttl

    def sadd(self, name, *values):
        return 0  # the set of workers is the set of fresh alive keys

    def srem(self, name, *values):
        return 0

    def own(self, key: str, value: str, ttl: float | None) -> None:
        """Hold ``key`` among this process's run values without publishing it now (the next
        :meth:`republish` does)."""
        with self._lock:
            self._owned[key] = (value, ttl)

    def republish(self) -> None:
        """Publish again every value this process holds for its run, in one message: a
        reader that has one of them has them all."""
        with self._lock:
            owned = dict(self._owned)
        if owned:
            self.writer.publish(run_topic(self.run_id), {k: v for k, (v, _t) in owned.items()},
                                None, {k: t for k, (_v, t) in owned.items()})

    # -- reading ---------------------------------------------------------------------------
    def get(self, key):
        value = self.board.get(_text(key))
        return None if value is None else _text(value).encode()

    def mget(self, keys):
        return [self.get(k) for k in keys]

    def exists(self, *keys):
        return sum(self.board.get(_text(k)) is not None for k in keys)

    def hget(self, name, field):
        return self.get(f"{name}#{_text(field)}")

    def hgetall(self, name):
        prefix = f"{name}#"
        return {k[len(prefix):].encode(): _text(v).encode()
                for k, v in self.board.items(prefix).items()}

    def smembers(self, name):
        if name != WORKERS_KEY:
            return set()
        return {k[len(ALIVE_PREFIX):].encode() for k in self.board.items(ALIVE_PREFIX)}

    # -- queues and the rest -----------------------------------------------------------------
    def llen(self, queue):
        return self.writer.queue_length(_text(queue))

    def lrange(self, name, start, end):
        return []

    def lrem(self, name, count, value):
        return 0

    def ping(self):
        self.writer.queue_length(None)
        return True

    def pipeline(self, transaction=False):
        return _Pipeline(self)

    def pubsub(self, **_kwargs):
        return FanoutListener(self.url)

    def close(self) -> None:
        self.board.close()
        self.writer.close()


class _Pipeline:
    """Commands run in order at :meth:`execute` (no atomicity: none is needed here)."""

    def __init__(self, records: Records):
        self._records, self._calls = records, []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self._calls.append((name, args, kwargs))
            return self
        return call

    def execute(self):
        results = []
        for name, args, kwargs in self._calls:
            results.append(getattr(self._records, name)(*args, **kwargs))
        self._calls = []
        return results


class FanoutListener:
    """What a Redis pub/sub gives for a fanout exchange (Celery's remote-control broadcast):
    ``subscribe("/0.celery.pidbox")`` binds a queue of its own to ``celery.pidbox``, declared
    as kombu's Mailbox declares it; each message comes as kombu's Redis envelope (JSON)."""

    def __init__(self, url: str):
        self.url = url
        self._conn = None
        self._got: list[str] = []

    def subscribe(self, *channels):
        from celeriac.wire.amqp_board import _connect
        self._conn = _connect(self.url)
        channel = self._conn.default_channel
        queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
        for name in channels:
            exchange = name.split(".", 1)[1] if name.startswith("/") else name
            channel.exchange_declare(exchange, "fanout", durable=False, auto_delete=False)
            channel.queue_bind(queue, exchange, "")
        channel.basic_consume(queue, callback=self._on_message, no_ack=True)

    def _on_message(self, message) -> None:
        body = message.body.decode() if isinstance(message.body, bytes) else message.body
        self._got.append(json.dumps({"body": body, "properties": {}}))

    def get_message(self, timeout=0.0):
        import socket
        if not self._got:
            try:
                self._conn.drain_events(timeout=timeout)
            except socket.timeout:
                pass
        return {"type": "message", "data": self._got.pop(0)} if self._got else None

    def close(self):
        if self._conn is not None:
            self._conn.release()
            self._conn = None
