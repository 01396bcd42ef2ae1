"""The AMQP task message, checked against kombu's pyamqp decoding and Celery's Request.

What :class:`~celeriac.wire.amqp_transport.AmqpTransport` publishes (a py-amqp message with
Celery's protocol-2 headers and the signed frame as body) must reach a worker's consumer,
through kombu's pyamqp ``Message`` and Celery's ``Request``, as the task name, id, shadow and
signed body the worker expects. A kombu, py-amqp or Celery upgrade that changes this fails here.
"""

import hashlib

import amqp
import pytest
from celery.worker.request import Request
from kombu.serialization import prepare_accept_content
from kombu.transport.pyamqp import Message as KombuMessage

from celeriac.errors import ConfigurationError, UntrustedPayload
from celeriac.wire import payload, worker_side
from celeriac.wire.amqp_transport import AmqpWorkerSide, publish_args
from celeriac.wire.call import Call
from celeriac.wire.keys import queue_name, results_key
from celeriac.wire.message import CONTENT_TYPE, TASK_NAME, TaskMessage
from celeriac.workers.app import make_app, state

RUN = "r-amqp-contract"
URL = "amqp://guest:guest@127.0.0.1:5699//"


def double(x):
    return 2 * x


@pytest.fixture
def key():
    return payload.new_key()


@pytest.fixture
def worker_app(key):
    saved = dict(vars(state))
    app = make_app(URL, key, run_id=RUN)
    yield app
    vars(state).clear()
    vars(state).update(saved)


def a_message(key, task_id="t-1"):
    func_bytes = payload.dumps(double)
    frame = payload.sign(key, payload.dumps(
        (hashlib.blake2b(func_bytes, digest_size=16).hexdigest(), func_bytes,
         [(task_id, payload.dumps(Call(task_id, 1, "double", "python", (21,))))])))
    return TaskMessage(task_id, "double", frame, results_key(RUN), f"host:{RUN}",
                       argsrepr="(21,)", kwargsrepr="{}")


def as_delivered(message: TaskMessage, queue: str) -> KombuMessage:
    """What a worker's pyamqp consumer gets for the published message: the py-amqp message
    (properties as they cross the wire) wrapped in kombu's pyamqp Message."""
    raw = amqp.Message(**publish_args(message, queue))
    # Through the wire codec and back, as the broker hands it to the consumer.
    frame = raw._serialize_properties()
    delivered = amqp.Message(body=raw.body)
    delivered._load_properties(raw.CLASS_ID, frame, 0)
    delivered.delivery_info = {"exchange": "", "routing_key": queue, "delivery_tag": 1,
                               "redelivered": False, "consumer_tag": "c"}
    return KombuMessage(delivered, channel=None)


def test_a_published_task_reaches_celery_as_the_task_with_its_id_shadow_and_signed_call(
        worker_app, key):
    queue = queue_name(RUN, "default")
    message = as_delivered(a_message(key), queue)
    message.accept = prepare_accept_content(worker_app.conf.accept_content)
    assert message.properties["delivery_mode"] == 2  # persistent: survives a broker restart
    assert "args" not in message.payload  # a protocol-2 message, not a protocol-1 hybrid
    request = Request(message, app=worker_app, hostname="w@test", body=message.body,
                      headers=message.headers, decoded=False)
    assert (request.id, request.type, request.name) == ("t-1", TASK_NAME, "double")
    assert request.task is worker_app.tasks[TASK_NAME]
    assert request.content_type == CONTENT_TYPE
    assert request.delivery_info["routing_key"] == queue
    assert request.reply_to == results_key(RUN)
    (frame,), kwargs = request.args, request.kwargs
    assert kwargs == {}
    _digest, func_bytes, [(task_id, call_bytes)] = payload.unseal(key, frame)
    assert (task_id, payload.loads(call_bytes).args) == ("t-1", (21,))
    assert payload.loads(func_bytes)(21) == 42
    with pytest.raises(UntrustedPayload):
        payload.unseal(payload.new_key(), frame)


def test_workers_pick_their_side_by_the_broker_scheme():
    assert isinstance(worker_side.for_url(URL), AmqpWorkerSide)
    assert isinstance(worker_side.for_url("redis://127.0.0.1:1/0"),
                      worker_side.RedisWorkerSide)
    with pytest.raises(ConfigurationError, match="redis://.*amqp://"):
        worker_side.for_url("sqs://queue")
