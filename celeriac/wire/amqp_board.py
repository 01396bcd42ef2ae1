"""The run's records on RabbitMQ, which has no key-value store: a board of expiring values.

What the Redis transport keeps as keys (a worker's alive info, held and running tasks, the
run's record and heartbeat, its revokes and its end) is published here as a message on the
``celeriac.board`` topic exchange, ``{"key", "value", "ttl"}`` with the routing key the
writer chooses (``worker.<name>`` for what a worker says, ``run.<run id>`` for what a run
says). Each reader keeps a :class:`Board`: an exclusive queue bound to the topics it needs,
consumed by a thread into an in-memory table where each value expires after its ttl.

Values are republished by their writers every beat (as the Redis keys are rewritten), so a
reader that starts late, or a broker that restarted, has them all again within a beat. A
value written once must therefore be rewritten by its owner each beat too (the run does so
for its record, revokes and end).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import amqp
from kombu import Connection

logger = logging.getLogger(__name__)

EXCHANGE = "celeriac.board"


def worker_topic(name: str) -> str:
    """The routing key of what worker ``name`` (or its supervisor) says."""
    return "worker." + name.replace(".", "_")


def run_topic(run_id: str) -> str:
    """The routing key of what run ``run_id``'s orchestrator says."""
    return "run." + run_id.replace(".", "_")


def _connect(url: str) -> Connection:
    conn = Connection(url, transport="pyamqp", connect_timeout=5, heartbeat=0)
    conn.ensure_connection(max_retries=3)
    conn.default_channel.exchange_declare(EXCHANGE, "topic", durable=True, auto_delete=False)
    return conn


class Writer:
    """Publishes values on the board (one connection; thread-safe)."""

    def __init__(self, url: str):
        self.url = url
        self._conn = None
        self._lock = threading.Lock()
        probe = Connection(url, transport="pyamqp")
        self.errors = tuple(probe.connection_errors) + tuple(probe.channel_errors)

    def publish(self, topic: str, values: dict, ttl: float | None,
                ttls: dict | None = None) -> None:
        """Put each ``{key: value}`` (JSON) on the board under ``topic`` for ``ttl`` seconds
        (None: until replaced; a value None deletes the key), in one message; ``ttls`` gives
        some keys their own."""
        message = amqp.Message(
            json.dumps({"values": values, "ttl": ttl, "ttls": ttls or {}}),
            content_type="application/json",
            expiration=str(int(ttl * 1000)) if ttl and not ttls else None)
        with self._lock:
            for attempt in (1, 2):  # a connection the broker dropped (it restarted): anew
                try:
                    if self._conn is None or not self._conn.connected:
                        self._conn = _connect(self.url)
                    self._conn.default_channel.basic_publish(
                        message, exchange=EXCHANGE, routing_key=topic)
                    return
                except self.errors:
                    self._drop()
                    if attempt == 2:
                        raise

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def queue_length(self, queue: str | None) -> int:
        """Messages waiting in ``queue`` (0 if it does not exist; None: only reach the
        broker)."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or not self._conn.connected:
                        self._conn = _connect(self.url)
                    if queue is None:
                        return 0
                    return self._passive_length(queue)
                except self.errors:
                    self._drop()
                    if attempt == 2:
                        raise
        return 0

    def _passive_length(self, queue: str) -> int:
        channel = self._conn.channel()
        try:
            return channel.queue_declare(queue, passive=True)[1]
        except amqp.exceptions.NotFound:  # no such queue (it closed the channel)
            return 0
        finally:
            try:
                channel.close()
            except Exception:
                pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.release()
            self._conn = None


class Board:
    """What the board says for ``topics`` (binding patterns such as ``worker.#``), kept
    current by a thread that consumes them and reconnects after a broker restart."""

    def __init__(self, url: str, topics: list[str]):
        self.url, self.topics = url, list(topics)
        self._values: dict[str, tuple[object, float]] = {}  # key -> (value, expires at)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celeriac-board", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        """Whether the board is consuming (within ``timeout`` seconds)."""
        return self._connected.wait(timeout)

    def get(self, key: str):
        """The value of ``key``, None if it is absent or expired."""
        with self._lock:
            value, expires = self._values.get(key, (None, 0.0))
        return value if expires > time.monotonic() else None

    def items(self, prefix: str = "") -> dict:
        """``{key: value}`` of the fresh keys starting with ``prefix``."""
        now = time.monotonic()
        with self._lock:
            return {k: v for k, (v, t) in self._values.items()
                    if k.startswith(prefix) and t > now}

    def _got(self, message) -> None:
        try:
            data = json.loads(message.body)
            values, ttl, ttls = dict(data["values"]), data.get("ttl"), dict(data.get("ttls") or {})
        except (ValueError, KeyError, TypeError):
            return
        now = time.monotonic()
        with self._lock:
            for key, value in values.items():
                seconds = ttls.get(key, ttl)
                if value is None:
                    self._values.pop(key, None)
                else:
                    self._values[key] = (value, now + (float(seconds) if seconds else 1e12))

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = None
            try:
                conn = _connect(self.url)
                channel = conn.default_channel
                queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
                for topic in self.topics:
                    channel.queue_bind(queue, EXCHANGE, topic)
                channel.basic_consume(queue, callback=self._got, no_ack=True)
                self._connected.set()
                while not self._stop.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except socket.timeout:
                        pass
            except Exception as e:  # the broker is away: keep what we know, try again
                self._connected.clear()
                logger.info("board connection lost (%s); reconnecting", e)
                self._stop.wait(1.0)
            finally:
                if conn is not None:
                    try:
                        conn.release()
                    except Exception:
                        pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
