"""Taking a task message off a run's Redis queue the way kombu delivers it, in one step.

kombu's Redis transport pops a message with BRPOP and then, in a second round trip, records
it in the ``unacked`` table (by delivery tag, with its delivery time in ``unacked_index``),
which is where a dead worker's messages are found again (celeriac.wire.redis_recovery).
:meth:`Taker.take` does both in one script, so a worker killed at any moment leaves the
message either in its queue or in the table, never nowhere; :meth:`Taker.hand_in_and_take`
also hands in the previous message's outcome and acknowledges it, all in one round trip.

The table entry is kombu's own (``[message, exchange, routing key]``, JSON), so kombu's and
celeriac's restores treat it like any other. Messages are taken from the queue's list as
celeriac's orchestrator writes them (priority 0, no key prefix).
"""

from __future__ import annotations

import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celeriac.wire.redis_recovery import UNACKED, UNACKED_INDEX

# KEYS: queue, unacked, unacked index; ARGV: now. The routing key is the queue (the
# exchange is the default one), as celeriac.wire.redis_transport.envelope writes them.
_TAKE = """
local item = redis.call('RPOP', KEYS[1])
if not item then return false end
local ok, message = pcall(cjson.decode, item)
local tag = ok and type(message) == 'table' and type(message['properties']) == 'table'
  and message['properties']['delivery_tag']
if type(tag) ~= 'string' then  -- not celeriac's: back where it was, for kombu to deliver
  redis.call('RPUSH', KEYS[1], item)
  return ''
end
redis.call('ZADD', KEYS[3], ARGV[1], tag)
redis.call('HSET', KEYS[2], tag, '[' .. item .. ',"",' .. cjson.encode(KEYS[1]) .. ']')
return item
"""

# KEYS: queue, unacked, unacked index; ARGV: the message, its delivery tag.
_GIVE_BACK = """
redis.call('ZREM', KEYS[3], ARGV[2])
if redis.call('HDEL', KEYS[2], ARGV[2]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
return 1
"""


class Taker:
    """One worker process's way to take messages off its queue (its own connection).

    Its client never sends a command again by itself after a dropped connection: a take
    whose reply was lost may have taken a message, and a second take would take another.
    The scripts go by digest (``EVALSHA``), loaded again if the broker forgot them (it
    restarted); redis-py's own script objects would ask the broker in a round trip more
    each time whether it knows them.
    """

    errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
        self._digests: dict[str, str] = {}

    def take(self, queue: str) -> bytes | None:
        """The next message of ``queue`` (kombu's JSON envelope), now in the unacked table;
        None if the queue is empty; ``b""`` if its next message has no delivery tag (it is
        left in the queue, for kombu to deliver)."""
        return self._run(_TAKE, [queue, UNACKED, UNACKED_INDEX], [time.time()])

    def hand_in_and_take(self, results_key: str, frame: bytes, delivery_tag: str,
                         queue: str | None) -> bytes | None:
        """Push outcome ``frame`` to the run, acknowledge message ``delivery_tag`` and take
        the next message of ``queue`` (None: take none), in one round trip and at once."""
        pipe = self.client.pipeline()  # MULTI ... EXEC
        pipe.rpush(results_key, frame).zrem(UNACKED_INDEX, delivery_tag) \
            .hdel(UNACKED, delivery_tag)
        if queue is not None:
            pipe.execute_command("EVALSHA", self._digest(_TAKE), 3, queue, UNACKED,
                                 UNACKED_INDEX, time.time())
        done = pipe.execute(raise_on_error=False)
        for reply in done[:3]:
            if isinstance(reply, Exception):
                raise reply
        if queue is None:
            return None
        if isinstance(done[3], redis.exceptions.NoScriptError):  # nothing taken this time
            self._digests.pop(_TAKE, None)
            return None
        if isinstance(done[3], Exception):
            raise done[3]
        return done[3]

    def give_back(self, queue: str, item: bytes, delivery_tag: str) -> None:
        """Put a taken message back at the head of ``queue`` (to be delivered by kombu)."""
        self._run(_GIVE_BACK, [queue, UNACKED, UNACKED_INDEX], [item, delivery_tag])

    def close(self) -> None:
        self.client.close()

    def _digest(self, script: str) -> str:
        digest = self._digests.get(script)
        if digest is None:
            digest = self._digests[script] = self.client.script_load(script)
        return digest

    def _run(self, script: str, keys: list, args: list):
        try:
            return self.client.evalsha(self._digest(script), len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # it did not run: load it, and run it
            self._digests.pop(script, None)
            return self.client.evalsha(self._digest(script), len(keys), *keys, *args)
