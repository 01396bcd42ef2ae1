"""The AMQP transport on a real RabbitMQ with real ``celery worker`` processes.

A task the orchestrator's transport publishes runs on a worker and its outcome comes back on
the run's results queue; a worker killed under a task (late acks) has RabbitMQ give the task
to another worker, which reports it lost (the run relaunches it) rather than run it twice;
queued tasks survive a broker restart; and the run's and workers' beats cross the board.
"""

import hashlib
import json
import operator
import os
import signal
import subprocess
import sys
import time

import pytest
from services import RMQ_ENV, _run_script

from celeriac.errors import WorkerLost
from celeriac.wire import outcome, payload
from celeriac.wire.amqp_transport import AmqpTransport
from celeriac.wire.call import Call
from celeriac.wire.keys import queue_name, results_key
from celeriac.wire.message import TaskMessage

pytestmark = pytest.mark.timeout(240)

WORKER = """
import os, sys
from celeriac.workers.app import make_app, state
from celeriac.workers.liveness import RunningNotes
url, run_id, queue, name = sys.argv[1:5]
app = make_app(url, bytes.fromhex(os.environ.pop("TEST_KEY")), run_id=run_id)
state.running = RunningNotes.from_environment()
app.worker_main(["worker", "-Q", queue, "-P", "solo", "-c", "1", "-n", name,
                 "--without-gossip", "--without-mingle", "--loglevel", "WARNING"])
"""


@pytest.fixture
def run(rabbitmq, tmp_path):
    run_id = f"r-amqp-{os.getpid()}-{time.monotonic_ns()}"
    transport = AmqpTransport(rabbitmq, run_id)
    transport.register_run({})
    key = payload.new_key()
    workers = []

    def worker(name):
        log = open(tmp_path / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, rabbitmq, run_id, queue_name(run_id, "default"),
             f"{name}@test"], env=dict(os.environ, TEST_KEY=key.hex()), stdout=log,
            stderr=subprocess.STDOUT)
        workers.append(proc)
        return proc

    yield transport, key, worker, run_id
    for proc in workers:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    try:
        transport.end_run([queue_name(run_id, "default")])
    finally:
        transport.close()


def a_message(key, run_id, task_id, func, args):
    func_bytes = payload.dumps(func)
    frame = payload.sign(key, payload.dumps(
        (hashlib.blake2b(func_bytes, digest_size=16).hexdigest(), func_bytes,
         [(task_id, payload.dumps(Call(task_id, 1, func.__name__, "python", args)))])))
    return TaskMessage(task_id, func.__name__, frame, results_key(run_id), f"test:{run_id}")


def outcomes(transport, key, count, timeout=120):
    """``{task id: (ok, value, worker)}`` of the next ``count`` outcomes."""
    found, deadline = {}, time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        frames, _ = transport.receive(100, 1)
        for frame in frames:
            _id, results, worker = outcome.open_outcomes(key, frame)
            for task_id, ok, value, _runtime in results:
                found[task_id] = (ok, payload.loads(value), worker)
    return found


def delivered(transport, queue, timeout=60):
    """Wait until ``queue`` is empty with a consumer: its message is with a worker."""
    channel = transport._send.default_channel
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _name, waiting, consumers = channel.queue_declare(queue, passive=True)
        if waiting == 0 and consumers:
            return True
        time.sleep(0.2)
    return False


def test_a_published_task_runs_on_a_celery_worker_and_its_outcome_comes_back(run):
    transport, key, worker, run_id = run
    queue = queue_name(run_id, "default")
    transport.send({queue: [a_message(key, run_id, f"t-{i}", operator.mul, (i, 7))
                            for i in range(5)]})
    worker("w1")
    got = outcomes(transport, key, 5)
    assert got == {f"t-{i}": (True, i * 7, "w1@test") for i in range(5)}


def test_a_killed_workers_task_comes_back_to_the_run_as_lost_not_run_twice(run):
    transport, key, worker, run_id = run
    queue = queue_name(run_id, "default")
    first = worker("w1")
    transport.send({queue: [a_message(key, run_id, "long", time.sleep, (4,))]})
    assert delivered(transport, queue), "the worker never took the task"
    time.sleep(1)  # it runs the task now (late ack: the message is still unacknowledged)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    worker("w2")
    # RabbitMQ gave the message to w2 (redelivered): w2 says it was lost rather than run it
    # again, so the run relaunches it as a new try, counted as a lost worker.
    [(ok, failure, name)] = outcomes(transport, key, 1).values()
    assert (ok, name) == (False, "w2@test")
    assert isinstance(failure.exception, WorkerLost)
    assert "died while holding it" in str(failure.exception)


def test_queued_tasks_survive_a_broker_restart(run):
    transport, key, worker, run_id = run
    queue = queue_name(run_id, "default")
    transport.send({queue: [a_message(key, run_id, f"t-{i}", operator.add, (i, 1))
                            for i in range(3)]})
    pid = int(open(os.path.join(RMQ_ENV["STATE_DIR"], "beam.pid")).read())
    os.kill(pid, signal.SIGTERM)
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(0.2)
    up = _run_script("start_rabbitmq.sh", RMQ_ENV)
    assert up.returncode == 0, up.stdout + up.stderr
    worker("w1")
    with pytest.raises(transport.errors):
        transport.receive(10, 1)  # the old connection is gone: the link retries
    assert outcomes(transport, key, 3) == {f"t-{i}": (True, i + 1, "w1@test") for i in range(3)}


def test_the_board_carries_worker_beats_to_the_run_and_the_runs_beat_to_workers(run, rabbitmq):
    from celeriac.wire.amqp_board import Board, Writer, run_topic, worker_topic
    from celeriac.wire.keys import ALIVE_PREFIX, RUNS_KEY, orchestrator_key
    from celeriac.workers.liveness import TTL
    transport, _key, _worker, run_id = run
    assert transport.client.board.wait_connected(30)
    # A worker's side, started after the run registered: it hears the run's next beat.
    seen_by_worker = Board(rabbitmq, [run_topic(run_id)])
    supervisor = Writer(rabbitmq)
    try:
        assert seen_by_worker.wait_connected(30)
        transport.register_run({"key_check": "abc"})
        info = {"queue": queue_name(run_id, "default"), "block": "0", "slots": 2,
                "ready": True}
        supervisor.publish(worker_topic("w1@test"), {ALIVE_PREFIX + "w1@test": json.dumps(info)},
                           TTL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                transport.live_workers() and seen_by_worker.get(orchestrator_key(run_id))):
            time.sleep(0.1)
        [w] = transport.live_workers()
        assert (w.name, w.queue, w.block, w.slots, w.ready) == (
            "w1@test", queue_name(run_id, "default"), "0", 2, True)
        assert json.loads(seen_by_worker.get(f"{RUNS_KEY}#{run_id}")) == {"key_check": "abc"}
        # Its supervisor stops beating: after the alive value's ttl the worker is gone.
        time.sleep(TTL + 0.5)
        assert transport.live_workers() == []
    finally:
        seen_by_worker.close()
        supervisor.close()
