"""Taking a message off a run's queue in one step (celeriac.wire.redis_take), on the embedded
Redis: the message lands in kombu's unacked table in kombu's own format (so kombu's restore
and the run's sweeper find it), its outcome is handed in and it is acknowledged in one round
trip, and a message given back is the next one delivered."""

import json

import pytest
from kombu.transport.redis import Channel

from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.wire.message import TaskMessage
from celeriac.wire.redis_recovery import UNACKED, UNACKED_INDEX
from celeriac.wire.redis_take import Taker
from celeriac.wire.redis_transport import envelope, redis_client

pytestmark = pytest.mark.integration

QUEUE = "celeriac.r1.q"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = EmbeddedRedis(str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture
def redis(broker):
    client = redis_client(broker.url)
    client.flushall()
    yield client
    client.close()


def _message(i: int) -> str:
    return envelope(TaskMessage(f"r1.{i}.1", "app", b"frame %d" % i, "results", "here"), QUEUE)


@pytest.mark.timeout(60)
def test_take_records_the_message_as_kombu_does_and_hand_in_acknowledges_it(broker, redis):
    redis.lpush(QUEUE, _message(1), _message(2))  # as a run sends: consumed from the right
    taker = Taker(broker.url)
    try:
        first = taker.take(QUEUE)
        assert json.loads(first)["properties"]["delivery_tag"] == "r1.1.1"
        assert redis.llen(QUEUE) == 1
        # kombu's own entry: [message, exchange, routing key], scored by delivery time
        message, exchange, routing_key = json.loads(redis.hget(UNACKED, "r1.1.1"))
        assert (message, exchange, routing_key) == (json.loads(_message(1)), "", QUEUE)
        assert redis.zscore(UNACKED_INDEX, "r1.1.1") is not None

        second = taker.hand_in_and_take("results", b"outcome 1", "r1.1.1", QUEUE)
        assert json.loads(second)["properties"]["delivery_tag"] == "r1.2.1"
        assert redis.lrange("results", 0, -1) == [b"outcome 1"]
        assert redis.hkeys(UNACKED) == [b"r1.2.1"]  # the first acknowledged, the second held

        assert taker.hand_in_and_take("results", b"outcome 2", "r1.2.1", QUEUE) is None
        assert redis.hlen(UNACKED) == 0 and redis.zcard(UNACKED_INDEX) == 0
        assert redis.lrange("results", 0, -1) == [b"outcome 1", b"outcome 2"]
    finally:
        taker.close()


@pytest.mark.timeout(60)
def test_a_taken_message_given_back_is_delivered_next_and_kombu_restores_one_left_held(
        broker, redis):
    redis.lpush(QUEUE, _message(1), _message(2))
    taker = Taker(broker.url)
    try:
        item = taker.take(QUEUE)
        taker.give_back(QUEUE, item, "r1.1.1")
        assert redis.hlen(UNACKED) == 0
        assert redis.rpop(QUEUE) == item  # at the head again: delivered next
        # One left in the table (its worker died) is put back by kombu's own restore.
        taker.take(QUEUE)
        from kombu import Connection
        with Connection(broker.url, transport="redis") as conn:
            channel = conn.default_channel
            assert isinstance(channel, Channel)
            channel.qos.restore_by_tag("r1.2.1")
        assert redis.hlen(UNACKED) == 0
        restored = json.loads(redis.rpop(QUEUE))
        assert restored["properties"]["delivery_tag"] == "r1.2.1"
        assert restored["properties"]["delivery_info"]["redelivered"] is True
    finally:
        taker.close()


@pytest.mark.timeout(60)
def test_a_message_without_a_delivery_tag_stays_in_the_queue_for_kombu(broker, redis):
    redis.lpush(QUEUE, json.dumps({"body": "x", "properties": {}}), "not json at all")
    taker = Taker(broker.url)
    try:
        assert taker.take(QUEUE) == b""  # "not json at all": left where it was
        assert redis.llen(QUEUE) == 2 and redis.hlen(UNACKED) == 0
        redis.rpop(QUEUE)
        assert taker.take(QUEUE) == b""  # no delivery tag
        assert redis.llen(QUEUE) == 1 and redis.hlen(UNACKED) == 0
        redis.rpop(QUEUE)
        assert taker.take(QUEUE) is None  # empty
    finally:
        taker.close()


@pytest.mark.timeout(60)
def test_a_broker_that_forgot_the_script_takes_nothing_then_loads_it_again(broker, redis):
    """A restarted broker has no scripts: the outcome still goes and its message is
    acknowledged, nothing is taken (the next message stays queued), and the next take
    loads the script again."""
    redis.lpush(QUEUE, _message(1), _message(2))
    taker = Taker(broker.url)
    try:
        taker.take(QUEUE)
        redis.script_flush()
        assert taker.hand_in_and_take("results", b"outcome 1", "r1.1.1", QUEUE) is None
        assert redis.lrange("results", 0, -1) == [b"outcome 1"]
        assert redis.hlen(UNACKED) == 0 and redis.llen(QUEUE) == 1
        redis.script_flush()
        assert json.loads(taker.take(QUEUE))["properties"]["delivery_tag"] == "r1.2.1"
        assert redis.hkeys(UNACKED) == [b"r1.2.1"]
    finally:
        taker.close()
