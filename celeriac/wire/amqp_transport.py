"""The AMQP transport (RabbitMQ): a run's queues and outcomes as durable queues.

Task messages are published on the default exchange with the executor queue as routing key,
persistent, with Celery's protocol-2 headers and the signed frame as the raw body
(:func:`publish_args`), so ``celery worker`` (kombu's pyamqp transport) consumes them as if
Celery had sent them. The queues are classic durable queues with no arguments, as a Celery
worker declares them itself (a quorum queue would make its declaration fail). Each batch is
one AMQP transaction: one round trip, and the broker has every message when it returns.

Outcomes: workers publish each signed frame (:class:`AmqpWorkerSide`) to the run's durable
results queue (named by :func:`~celeriac.wire.keys.results_key`), which the orchestrator
consumes on a connection of its own.

The run's record and heartbeat, and the workers' alive values, are on the board
(:mod:`celeriac.wire.amqp_board`). Not yet on AMQP: workers writing their alive, held and
running values there (their supervisors still write Redis keys), deaths, revokes, the run's
end, and the sweeper for stopped workers.
"""

from __future__ import annotations

import socket
import threading

import amqp
from kombu import Connection

from celeriac.wire import alive
from celeriac.wire.amqp_board import Board, Writer, run_topic
from celeriac.wire.base import Transport
from celeriac.wire.keys import (
    ALIVE_PREFIX,
    ORCHESTRATOR_TTL,
    RUNS_KEY,
    orchestrator_key,
    results_key,
)
from celeriac.wire.message import CONTENT_TYPE, TaskMessage
from celeriac.wire.worker_side import WorkerSide

#: The run's queues expire this long after their last use once the run is gone (a run that
#: ends cleanly deletes them; this bounds what a crashed one leaves).
QUEUE_EXPIRES_MS = 7 * 24 * 3600 * 1000


def publish_args(message: TaskMessage, queue: str) -> dict:
    """``message`` as the keyword arguments of a py-amqp ``Message`` published to ``queue``
    (``body`` and the properties a Celery producer sets)."""
    return dict(body=message.frame, content_type=CONTENT_TYPE, content_encoding="binary",
                application_headers=message.headers(), **message.properties())


def _connect(url: str) -> Connection:
    conn = Connection(url, transport="pyamqp", connect_timeout=5, heartbeat=0)
    conn.ensure_connection(max_retries=3)
    return conn


class AmqpTransport(Transport):
    """One run on a RabbitMQ broker (``amqp://user:pass@host:port/vhost``).

    Two connections: one publishes (and declares), the other consumes the results queue
    (a py-amqp connection is not thread-safe; each is used by one of the link's threads).
    """

    def __init__(self, url: str, run_id: str):
        self.url, self.run_id = url, run_id
        self.results_key = results_key(run_id)
        self._send = _connect(url)
        self.errors = tuple(self._send.connection_errors) + tuple(self._send.channel_errors)
        self._declared: set[str] = set()
        self._listen = None
        self._buffer: list[bytes] = []
        self._lock = threading.Lock()
        self._run_values: dict = {}  # what the run says on the board, every beat
        self.writer = Writer(url)
        self.board = Board(url, ["worker.#", run_topic(run_id)])

    # -- sending ---------------------------------------------------------------------------
    def _channel(self):
        if not self._send.connected:
            self._send = _connect(self.url)
            self._declared.clear()
        channel = self._send.default_channel
        if not getattr(channel, "_celeriac_tx", False):
            channel.tx_select()
            channel._celeriac_tx = True
        return channel

    def _declare(self, channel, queue: str) -> None:
        if queue not in self._declared:
            channel.queue_declare(queue, durable=True, auto_delete=False)
            self._declared.add(queue)

    def send(self, messages: dict[str, list[TaskMessage]], events=None) -> list:
        with self._lock:
            try:
                channel = self._channel()
                for queue, batch in messages.items():
                    self._declare(channel, queue)
                    for message in batch:
                        channel.basic_publish(
                            amqp.Message(**publish_args(message, queue)),
                            exchange="", routing_key=queue)
                channel.tx_commit()
            except self.errors:
                self._send.close()  # a fresh connection (and declarations) next time
                raise
        return [0] * len((events or (None, ()))[1])

    # -- receiving -------------------------------------------------------------------------
    def _consume(self):
        if self._listen is None or not self._listen.connected:
            self._listen = _connect(self.url)
            channel = self._listen.default_channel
            channel.queue_declare(self.results_key, durable=True, auto_delete=False,
                                  arguments={"x-expires": QUEUE_EXPIRES_MS})
            channel.basic_qos(0, 1000, False)
            channel.basic_consume(self.results_key, callback=self._got)
        return self._listen

    def _got(self, message) -> None:
        self._buffer.append(bytes(message.body))
        message.channel.basic_ack(message.delivery_tag)

    def receive(self, limit: int, timeout: float) -> tuple[list[bytes], bool]:
        try:
            conn = self._consume()
            if not self._buffer:
                try:
                    conn.drain_events(timeout=timeout)
                except socket.timeout:
                    pass
            while len(self._buffer) <= limit:  # what has arrived already
                try:
                    conn.drain_events(timeout=0)
                except socket.timeout:
                    break
        except self.errors:
            if self._listen is not None:
                self._listen.close()
            raise
        frames, self._buffer = self._buffer[:limit], self._buffer[limit:]
        return frames, not self._buffer

    # -- the run ---------------------------------------------------------------------------
    def register_run(self, info: dict) -> None:
        self._consume()  # the results queue exists before any worker publishes to it
        self._run_values[f"{RUNS_KEY}:{self.run_id}"] = info
        self.beat_run()

    def beat_run(self) -> None:
        """Say the run is alive, with its record (a board value lasts a couple of beats)."""
        self.writer.publish(run_topic(self.run_id), dict(
            self._run_values, **{orchestrator_key(self.run_id): "1"}), 2 * ORCHESTRATOR_TTL)

    def end_run(self, queues) -> None:
        if self._listen is not None:  # stop consuming before the results queue goes
            self._listen.release()
            self._listen = None
        with self._lock:
            for attempt in (1, 2):  # a connection the broker dropped (it restarted): anew
                try:
                    channel = self._channel()
                    for queue in [*queues, self.results_key]:
                        channel.queue_delete(queue)
                    channel.tx_commit()
                    return
                except self.errors:
                    self._send.close()
                    if attempt == 2:
                        raise

    # -- workers --------------------------------------------------------------------------
    def live_workers(self):
        """The workers whose supervisors' alive values on the board are fresh."""
        values = self.board.items(ALIVE_PREFIX)
        return alive.from_values(sorted((k[len(ALIVE_PREFIX):], v) for k, v in values.items()))

    def death_of(self, message_id: str) -> str | None:
        return None

    def sweeper(self, describe):
        return _NoSweeper()

    def instance(self) -> str | None:
        return None

    def whereabouts(self, queues) -> tuple[set, dict]:
        return set(), {}

    def take_back(self, handle) -> bool:
        return False

    def close(self) -> None:
        self.board.close()
        self.writer.close()
        for conn in (self._send, self._listen):
            if conn is not None:
                conn.release()


class _NoSweeper:
    """RabbitMQ requeues a dead worker's unacknowledged messages itself (late acks)."""

    def sweep(self, pending) -> list[tuple[str, str]]:
        return []


class AmqpWorkerSide(WorkerSide):
    """A worker's outcomes published (persistent, confirmed) to its run's results queue."""

    def __init__(self, url: str):
        self.url = url
        self._conn = None
        probe = Connection(url, transport="pyamqp")
        self.errors = tuple(probe.connection_errors) + tuple(probe.channel_errors)

    def push_outcome(self, results_key: str, frame: bytes) -> None:
        if self._conn is None or not self._conn.connected:
            self._conn = _connect(self.url)
            self._conn.default_channel.confirm_select()
        channel = self._conn.default_channel
        try:
            channel.basic_publish_confirm(
                amqp.Message(frame, content_type=CONTENT_TYPE, content_encoding="binary",
                             delivery_mode=2),
                exchange="", routing_key=results_key)
        except self.errors:
            self._conn.close()
            self._conn = None
            raise

    @property
    def records(self):
        from celeriac.errors import ConfigurationError
        raise ConfigurationError(
            "the run's records (liveness, revokes, the run's end) are not on AMQP brokers "
            "yet: use a redis:// broker for celeriac worker")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.release()
