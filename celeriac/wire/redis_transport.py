"""The Redis transport: a run's queues, outcomes, records and lost messages on a Redis broker.

Task messages are kombu's Redis envelopes (JSON, the body base64) pushed onto the queue's list,
so ``celery worker`` consumes them as if a kombu producer had sent them; outcomes are
RPUSHed by workers onto the run's result list (``celeriac.workers.backend``) and popped here.
Lost messages are found in kombu's unacked table (:mod:`celeriac.wire.redis_recovery`).
"""

from __future__ import annotations

import base64
import json

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from celeriac.wire import deaths, redis_recovery
from celeriac.wire.alive import LiveWorker, live_workers
from celeriac.wire.base import Transport
from celeriac.wire.events import EXCHANGE, ROUTING_KEY, redis_envelope
from celeriac.wire.keys import ORCHESTRATOR_TTL, RUNS_KEY, orchestrator_key, results_key
from celeriac.wire.message import CONTENT_TYPE, TaskMessage
from celeriac.wire.revokes import revoked_key

QUEUE_SCAN = 10000  # queued messages looked through to drop a revoked one


def redis_client(url: str) -> redis.Redis:
    """A Redis client that rides out short connection drops (5 retries with backoff)."""
    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=2.0), 5),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        health_check_interval=30)


def fanout_channel(client: redis.Redis, exchange: str, routing_key: str = "") -> str:
    """The pub/sub channel kombu's Redis transport publishes a fanout message on, for
    ``client``'s database (kombu's default ``fanout_prefix`` and ``fanout_patterns``):
    ``/0.celeryev/task.sent`` for events, ``/0.celery.pidbox`` for a remote-control
    broadcast."""
    db = client.connection_pool.connection_kwargs.get("db", 0) or 0
    return f"/{db}.{exchange}/{routing_key}" if routing_key else f"/{db}.{exchange}"


def envelope(message: TaskMessage, queue: str) -> str:
    """``message`` as kombu's Redis transport stores it on ``queue``'s list."""
    return json.dumps({
        "body": base64.b64encode(message.frame).decode(),
        "content-encoding": "binary",
        "content-type": CONTENT_TYPE,
        "headers": message.headers(),
        "properties": dict(
            message.properties(), delivery_info={"exchange": "", "routing_key": queue},
            body_encoding="base64", delivery_tag=message.id),
    })


class RedisTransport(Transport):
    """One run on a Redis broker (``redis://`` or ``rediss://``).

    Two connections: one blocks in BLPOP for outcomes, the other serves every other command
    (redis-py clients are thread-safe; each command takes a pooled connection).
    """

    errors = (redis.exceptions.RedisError,)

    def __init__(self, url: str, run_id: str):
        self.run_id = run_id
        self.results_key = results_key(run_id)
        self.client = redis_client(url)
        self._listen_client = redis_client(url)
        self._events_channel = fanout_channel(self.client, EXCHANGE, ROUTING_KEY)
        self._listening = None  # the listener's own connection (see _exchange)

    def send(self, messages: dict[str, list[TaskMessage]], events=()) -> list:
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.publish(self._events_channel, redis_envelope(event))
        for queue, batch in messages.items():
            pipe.lpush(queue, *[envelope(m, queue) for m in batch])
        return pipe.execute()[:len(events)]

    def event_listeners(self):
        """Event consumers PSUBSCRIBE; so do workers' remote-control queues (maybe)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.pubsub_numpat()
        pipe.pubsub_numsub(self._events_channel)
        numpat, numsub = pipe.execute()
        return "some" if numsub and numsub[0][1] else "maybe" if numpat else "none"

    def receive(self, limit: int, timeout: float) -> tuple[list[bytes], bool]:
        # One round trip whether outcomes wait or not: Redis runs the LPOP queued behind
        # the BLPOP as soon as the BLPOP has its first frame (an LPOP that found nothing,
        # then a BLPOP, cost a dependent task one more wake-up of Redis and of this thread).
        def once():
            _replies, got = self._exchange([], limit, timeout)
            if isinstance(got, BaseException):
                raise got
            return got
        return self._listen_client.get_retry().call_with_retry(once, lambda _error: None)

    def send_and_receive(self, messages, events, limit: int, timeout: float):
        # One write, one wake-up of Redis: the messages, then the BLPOP (+ LPOP) for the next
        # outcomes, on the listening connection. The messages' replies are read first, so
        # a failure after them is a failed receive only: nothing is sent twice.
        commands = [("PUBLISH", self._events_channel, redis_envelope(event))
                    for event in events]
        commands += [("LPUSH", queue, *[envelope(m, queue) for m in batch])
                     for queue, batch in messages.items()]
        replies, got = self._exchange(commands, limit, timeout)
        return replies[:len(events)], got

    def _exchange(self, commands: list, limit: int, timeout: float):
        """Send ``commands``, BLPOP and LPOP in one write on the listening connection (kept
        open: taking one from the pool costs a poll of its socket every time); returns
        (``commands``' replies, ``(frames, drained)`` or the error that ended the wait)."""
        more = limit - 1
        sends = len(commands)
        commands = commands + [("BLPOP", self.results_key, timeout)]
        if more:
            commands.append(("LPOP", self.results_key, more))
        conn = self._listening
        if conn is None:
            conn = self._listening = self._listen_client.connection_pool.make_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies = [conn.read_response() for _ in range(sends)]
        except BaseException:
            conn.disconnect()
            raise
        try:
            item = conn.read_response()
            rest = (conn.read_response() if more else None) or []
        except self.errors as e:
            conn.disconnect()
            return replies, e
        except BaseException:
            conn.disconnect()
            raise
        return replies, (([item[1]] if item else []) + rest, len(rest) < more or not item)

    def register_run(self, info: dict) -> None:
        self.client.hset(RUNS_KEY, self.run_id, json.dumps(info))

    def beat_run(self) -> None:
        self.client.set(orchestrator_key(self.run_id), "1", px=int(ORCHESTRATOR_TTL * 1000))

    def end_run(self, queues) -> None:
        self.client.delete(self.results_key, revoked_key(self.run_id), *queues)
        self.client.hdel(RUNS_KEY, self.run_id)
        self.client.delete(orchestrator_key(self.run_id))

    def live_workers(self) -> list[LiveWorker]:
        return live_workers(self.client)

    def death_of(self, message_id: str) -> str | None:
        return deaths.explain(self.client, message_id)

    def sweeper(self, describe) -> redis_recovery.Sweeper:
        return redis_recovery.Sweeper(self.client, describe)

    def instance(self) -> str | None:
        """Redis's run id: it changes when Redis restarts (and may have forgotten its lists)."""
        try:
            return self.client.info("server").get("run_id")
        except redis.exceptions.RedisError:
            return None

    def whereabouts(self, queues) -> tuple[set, dict]:
        return redis_recovery.whereabouts(self.client, queues)

    def take_back(self, handle) -> bool:
        return redis_recovery.take_back(self.client, handle)

    def drop_queued(self, queues, message_id: str) -> bool:
        """Looks through the last ``QUEUE_SCAN`` messages of each queue (workers pop from
        that end); LREM is atomic, so a worker that pops it first has it instead."""
        needle = f'"id": "{message_id}"'.encode()
        for queue in list(queues):
            for raw in self.client.lrange(queue, -QUEUE_SCAN, -1):
                if needle in raw and json.loads(raw)["headers"].get("id") == message_id:
                    return bool(self.client.lrem(queue, 1, raw))
        return False

    def listen_broadcast(self, exchange: str):
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(fanout_channel(self.client, exchange))
        return pubsub

    def close(self) -> None:
        self.client.close()
        if self._listening is not None:
            self._listening.disconnect()
        self._listen_client.close()
