"""A value over RabbitMQ's limit on a message (``max_message_size``, 128 MiB by default)
ends its task at once with an error naming the size, the limit and what to do; nothing
hangs, and the worker and the queue go on serving. The worker here cannot see the
orchestrator's /dev/shm (its spill root differs), as on another host, so big values travel
through the broker (celeriac.wire.bigvalues, celeriac.wire.amqp_limits)."""

import glob
import os

import pytest
from services import start_worker, stop

import celeriac
from celeriac import Config, python_app
from celeriac.errors import MessageTooLarge
from celeriac.executors import CeleryExecutor
from celeriac.wire.bigvalues import ROOT_ENV, spill_dir

pytestmark = pytest.mark.integration

MIB = 1 << 20
OVER = 130 * MIB     # over the test broker's limit: RabbitMQ's default, 128 MiB


@python_app(executors=["byhand"])
def length(blob):
    return len(blob)


@python_app(executors=["byhand"])
def zeros(mib):
    return bytes(mib * (1 << 20))


@pytest.fixture(scope="module")
def run(rabbitmq, tmp_path_factory):
    """A run on the test RabbitMQ, its one worker unable to see the run's big-value files."""
    celeriac.clear()
    dfk = celeriac.load(Config([CeleryExecutor(label="byhand", provider=None)], broker=rabbitmq,
                               run_dir=str(tmp_path_factory.mktemp("runs"))))
    worker = start_worker("--executor", "byhand",
                          "--run-file", os.path.join(dfk.run_dir, "worker.json"),
                          env={ROOT_ENV: str(tmp_path_factory.mktemp("elsewhere"))})
    try:
        assert length(b"up").result(timeout=120) == 2
        yield dfk
    finally:
        stop(worker)
        dfk.cleanup()
        celeriac.clear()


def says_what_to_do(error: MessageTooLarge, what: str) -> None:
    text = str(error)
    assert text.startswith(what) and "130.0 MiB" in text, text
    assert "(128.0 MiB: RabbitMQ's max_message_size)" in text, text
    assert "max_message_size in rabbitmq.conf" in text and "/dev/shm" in text, text
    assert "reachable" not in text, text


@pytest.mark.timeout(300)
def test_an_argument_over_the_limit_fails_its_task_saying_what_to_do(run):
    blob = bytes(OVER)
    # Sent as a file first, which the worker cannot read; then resent inline, and refused.
    with pytest.raises(MessageTooLarge) as refused:
        length(blob).result(timeout=120)
    says_what_to_do(refused.value, "the task message of length is")
    # The queue now takes values inline: the next one is refused before it is sent, and a
    # small call sent with it still runs.
    big, small = length(blob), length(b"abc")
    with pytest.raises(MessageTooLarge):
        big.result(timeout=60)
    assert small.result(timeout=60) == 3
    assert glob.glob(os.path.join(spill_dir(run.run_id), "a-*")) == []  # its file is gone


@pytest.mark.timeout(300)
def test_a_result_over_the_limit_fails_its_task_saying_what_to_do(run):
    with pytest.raises(MessageTooLarge) as refused:
        zeros(OVER // MIB).result(timeout=120)
    says_what_to_do(refused.value, "the task's outcome (its result or exception) is")
    assert length(b"still serving").result(timeout=60) == 13
