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

The run's records (its record and heartbeat, revokes and end; the workers' alive, held and
running values; deaths) are on the board (:mod:`celeriac.wire.amqp_records`). A dead
worker's messages go back to their queue by RabbitMQ itself (late acks: its connection
closed) and the worker that gets it back reports it lost (``workers.app``), so the sweeper
has nothing to take back; the tasks of a stopped (SIGSTOP) worker are relaunched as a new
try (:mod:`celeriac.wire.amqp_recovery`). Celery's task-sent events go in the batch's
transaction (:mod:`celeriac.wire.amqp_events`).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import amqp
from kombu import Connection

from celeriac.errors import hide_password
from celeriac.wire import alive, amqp_events, amqp_limits, deaths
from celeriac.wire.amqp_board import Board
from celeriac.wire.amqp_records import FanoutListener, Records
from celeriac.wire.amqp_recovery import AmqpSweeper
from celeriac.wire.base import Transport
from celeriac.wire.keys import (
    HELD_PREFIX,
    ORCHESTRATOR_TTL,
    RUNS_KEY,
    orchestrator_key,
    results_key,
)
from celeriac.wire.message import CONTENT_TYPE, TaskMessage
from celeriac.wire.revokes import revoked_key
from celeriac.wire.worker_side import WorkerSide, held_lists

#: The run's queues expire this long after their last use once the run is gone (a run that
#: ends cleanly deletes them; this bounds what a crashed one leaves).
QUEUE_EXPIRES_MS = 7 * 24 * 3600 * 1000

#: A run says again all it said every beat (the link's sweep interval, 2 s): a reader that
#: listens this long has heard every active run.
RUN_BEAT_WAIT = 3.0


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
        self.max_message_size = None  # bytes: learnt when the broker refuses a message
        self.client = Records(url, run_id, workers=True)  # the run's and workers' records

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

    def send(self, messages: dict[str, list[TaskMessage]], events=()) -> list:
        amqp_limits.check(messages, self.max_message_size)
        with self._lock:
            try:
                channel = self._channel()
                heard = amqp_events.publish(channel, events) if events else list
                for queue, batch in messages.items():
                    self._declare(channel, queue)
                    for message in batch:
                        channel.basic_publish(
                            amqp.Message(**publish_args(message, queue)),
                            exchange="", routing_key=queue)
                channel.tx_commit()
            except self.errors as e:
                self._send.close()  # a fresh connection (and declarations) next time
                self.max_message_size = amqp_limits.refused_limit(e) or self.max_message_size
                amqp_limits.check(messages, self.max_message_size)  # nothing was sent
                raise
            return heard()

    def event_listeners(self):
        """"maybe" while Celery's event exchange exists (who is bound to it, AMQP cannot
        say), else "none"."""
        with self._lock:
            try:
                self._channel()  # connected
                return "maybe" if amqp_events.exchange_exists(self._send) else "none"
            except self.errors:
                self._send.close()
                raise

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
        self.client.hset(RUNS_KEY, self.run_id, json.dumps(info))
        self.beat_run()

    def beat_run(self) -> None:
        """Say the run is alive, and again all it said (for workers that started since)."""
        self.client.own(orchestrator_key(self.run_id), "1", ORCHESTRATOR_TTL)
        self.client.republish()

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
                    break
                except self.errors:
                    self._send.close()
                    if attempt == 2:
                        raise
        self.client.hdel(RUNS_KEY, self.run_id)
        self.client.delete(orchestrator_key(self.run_id), revoked_key(self.run_id))

    # -- workers --------------------------------------------------------------------------
    def live_workers(self):
        """The workers whose supervisors' alive values on the board are fresh."""
        return alive.live_workers(self.client)

    def death_of(self, message_id: str) -> str | None:
        return deaths.explain(self.client, message_id)

    def sweeper(self, describe):
        return AmqpSweeper(self.client, describe)

    def instance(self) -> str | None:
        """One id while the board is connected, None while the broker is away: a restart is
        not told apart (RabbitMQ keeps its durable queues and gives unacknowledged messages
        back itself), but the run waits for workers to beat again before judging them."""
        return "rabbitmq" if self.client.board.wait_connected(0) else None

    def whereabouts(self, queues) -> tuple[set, dict]:
        return set(), {}

    def take_back(self, handle) -> bool:
        return False

    def listen_broadcast(self, exchange: str):
        """A queue of its own bound to the fanout ``exchange`` (kombu's Mailbox declares it
        so), each message handed over as kombu's Redis envelope."""
        listener = FanoutListener(self.url)
        listener.subscribe(exchange)
        return listener

    def close(self) -> None:
        self.client.close()
        for conn in (self._send, self._listen):
            if conn is not None:
                conn.release()


class AmqpWorkerSide(WorkerSide):
    """A worker's outcomes published (persistent, confirmed) to its run's results queue."""

    def __init__(self, url: str, run_id: str | None = None):
        self.url, self.run_id = url, run_id
        self._conn = None
        self._records = None
        self._workers = None  # every worker's values (for held), made when first needed
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
        except self.errors as e:
            self._conn.close()
            self._conn = None
            limit = amqp_limits.refused_limit(e)
            if limit:  # not worth retrying: the worker sends a failure saying so instead
                raise amqp_limits.too_large("the task's outcome (its result or exception)",
                                            len(frame), limit) from None
            raise

    @property
    def records(self) -> Records:
        """The run's records on the board (see :mod:`celeriac.wire.amqp_records`)."""
        if self._records is None:
            if self.run_id is None:
                from celeriac.errors import ConfigurationError
                raise ConfigurationError("a worker on an AMQP broker needs its run's id")
            self._records = Records(self.url, self.run_id)
            self._records.board.wait_connected(5)
            # Until the run's next beat the board knows nothing of it (its revokes, its key
            # check): wait for it, so a message revoked already is skipped, not run.
            deadline = time.monotonic() + ORCHESTRATOR_TTL
            while not self._records.exists(orchestrator_key(self.run_id)) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
        return self._records

    def held(self, names) -> dict[str, list]:
        """What ``names`` said they hold, from a board of every worker's values (it knows
        nothing on the first call: workers say it again every second)."""
        if self._workers is None:
            self._workers = Board(self.url, ["worker.#"])
        return held_lists(names, [self._workers.get(HELD_PREFIX + n) for n in names])

    def active_runs(self) -> list[str]:
        """The runs heard on the board within a run's beat (each active run says it is)."""
        board = Board(self.url, ["run.#"])
        try:
            if not board.wait_connected(10):
                raise OSError(f"cannot connect to the broker at {hide_password(self.url)}")
            time.sleep(RUN_BEAT_WAIT)
            prefix = RUNS_KEY + "#"
            return sorted(k[len(prefix):] for k in board.items(prefix))
        finally:
            board.close()

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
        if self._records is not None:
            self._records.close()
        if self._conn is not None:
            self._conn.release()
