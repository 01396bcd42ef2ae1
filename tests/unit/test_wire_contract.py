"""The wire contract, checked against kombu's and Celery's own decoding on a real Redis.

A task message the orchestrator sends must reach a worker, through kombu's Redis transport
and Celery's protocol-2 request, as the task name, id, shadow and signed body the worker
expects; an outcome a worker's backend pushes must open in the orchestrator's reader; and a
frame signed with one run's key must not open with another's. A kombu or Celery upgrade that
changes any of this fails here rather than on a cluster.
"""

import hashlib

import pytest
from celery.app.task import Context
from celery.utils.serialization import get_pickled_exception
from celery.worker.request import Request
from kombu import Connection
from kombu.serialization import prepare_accept_content

from celeriac.errors import UntrustedPayload
from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.wire import outcome, payload
from celeriac.wire.call import Call, Failure
from celeriac.wire.keys import queue_name, results_key
from celeriac.wire.message import CONTENT_TYPE, TASK_NAME, TaskMessage
from celeriac.wire.redis_transport import RedisTransport
from celeriac.workers import transport as worker_transport
from celeriac.workers.app import make_app, state

pytestmark = pytest.mark.timeout(60)

RUN = "r-contract"


def double(x):
    return 2 * x


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with EmbeddedRedis(str(tmp_path_factory.mktemp("redis"))) as redis_server:
        yield redis_server.url


@pytest.fixture
def key():
    return payload.new_key()


@pytest.fixture
def worker_app(broker, key):
    """The app a worker of run ``RUN`` builds (its global state restored afterwards)."""
    saved = dict(vars(state))
    app = make_app(broker, key, run_id=RUN)
    yield app
    vars(state).clear()
    vars(state).update(saved)


@pytest.fixture
def transport(broker):
    t = RedisTransport(broker, RUN)
    t.client.flushdb()
    yield t
    t.close()


def a_message(key, task_id="t-1", name="double", args=(21,)):
    """What CeleryLink sends for one call of ``double``."""
    func_bytes = payload.dumps(double)
    call = Call(task_id, 1, name, "python", args)
    frame = payload.sign(key, payload.dumps(
        (hashlib.blake2b(func_bytes, digest_size=16).hexdigest(), func_bytes,
         [(task_id, payload.dumps(call))])))
    return TaskMessage(task_id, name, frame, results_key(RUN), f"host:{RUN}",
                       argsrepr="(21,)", kwargsrepr="{}")


def worker_receives(app, broker, queue):
    """The next message on ``queue`` as a worker's consumer reads it: kombu's Redis transport
    (the one workers use) gets and decodes it, Celery's strategy makes the request."""
    with Connection(broker, transport=worker_transport.for_url(broker)) as conn:
        channel = conn.default_channel
        message = channel.basic_get(queue)
        assert message is not None, f"nothing on {queue}"
        message.accept = prepare_accept_content(app.conf.accept_content)
        # celery.worker.strategy.default: a protocol-2 message goes in as it is.
        assert "args" not in message.payload  # (else Celery reads it as a protocol-1 hybrid)
        return Request(message, app=app, hostname="w@test", body=message.body,
                       headers=message.headers, decoded=False)


def test_a_sent_task_reaches_celery_as_the_task_with_its_id_shadow_and_signed_call(
        worker_app, broker, transport, key):
    queue = queue_name(RUN, "default")
    transport.send({queue: [a_message(key)]})
    request = worker_receives(worker_app, broker, queue)
    assert (request.id, request.type, request.name) == ("t-1", TASK_NAME, "double")
    assert request.task is worker_app.tasks[TASK_NAME]
    assert (request.argsrepr, request.kwargsrepr) == ("(21,)", "{}")
    assert request.content_type == CONTENT_TYPE
    assert request.delivery_info["routing_key"] == queue
    assert request.reply_to == results_key(RUN)
    # The task's one argument is the signed frame, which opens with the run's key only.
    (frame,), kwargs = request.args, request.kwargs
    assert kwargs == {}
    digest, func_bytes, calls = payload.unseal(key, frame)
    [(task_id, call_bytes)] = calls
    call = payload.loads(call_bytes)
    assert (task_id, call.task_id, call.args) == ("t-1", "t-1", (21,))
    assert payload.loads(func_bytes)(*call.args) == 42
    with pytest.raises(UntrustedPayload):
        payload.unseal(payload.new_key(), frame)


def test_the_headers_are_the_ones_celery_itself_writes_for_protocol_2(worker_app, key):
    message = a_message(key)
    celery = worker_app.amqp.as_task_v2(
        "t-1", TASK_NAME, args=(), kwargs={}, shadow="double", root_id="t-1",
        origin=f"host:{RUN}", argsrepr="(21,)", kwargsrepr="{}", reply_to=results_key(RUN))
    ours = message.headers()
    # Every header Celery writes, we write, with the value Celery gives it.
    assert sorted(set(celery.headers) - set(ours)) == []
    assert {k: ours[k] for k in celery.headers} == celery.headers
    props = message.properties()
    assert {k: props[k] for k in ("correlation_id", "reply_to")} == \
        {k: celery.properties[k] for k in ("correlation_id", "reply_to")}


def test_an_outcome_stored_by_a_worker_backend_opens_in_the_orchestrators_reader(
        worker_app, transport, key):
    backend = worker_app.backend
    request = Context(task=TASK_NAME, id="t-1", hostname="w@test")
    state.verified.add("t-1")
    state.runtimes["t-1"] = 0.5
    backend.store_result("t-1", 42, "SUCCESS", request=request)
    state.verified.add("t-2")
    try:
        raise ValueError("bad input")
    except ValueError as e:
        state.failures["t-2"] = Failure.capture(e)
        backend.store_result("t-2", e, "FAILURE", traceback="tb", request=
                             Context(task=TASK_NAME, id="t-2", hostname="w@test"))
    frames, drained = transport.receive(10, 1)
    assert drained and len(frames) == 2
    first, second = (outcome.open_outcomes(key, f) for f in frames)
    assert (first[0], first[2], second[0], second[2]) == ("t-1", "w@test", "t-2", "w@test")
    [(task_id, ok, value, runtime)] = first[1]
    assert (task_id, ok, payload.loads(value), runtime) == ("t-1", True, 42, 0.5)
    [(task_id, ok, value, runtime)] = second[1]
    failure = payload.loads(value)
    assert (task_id, ok, runtime) == ("t-2", False, None)
    assert isinstance(get_pickled_exception(failure.exception), ValueError)
    assert "bad input" in failure.traceback
    with pytest.raises(UntrustedPayload):
        outcome.open_outcomes(payload.new_key(), frames[0])


def test_an_outcome_of_a_message_the_worker_never_verified_is_not_sent(
        worker_app, transport, key):
    # A forged message's outcome must not be signed with the run's key.
    worker_app.backend.store_result("forged", 1, "SUCCESS",
                                    request=Context(task=TASK_NAME, id="forged"))
    assert transport.receive(10, 0.1) == ([], True)
