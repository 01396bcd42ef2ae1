"""Faults in a chain whose steps travel in one message (each step waits for the step before
alone, so the worker runs them one after another): a step that fails once, one that fails
for good, and the worker killed with SIGKILL in the middle of the message; on Redis and on
RabbitMQ."""

import os
import signal
import time
from concurrent.futures import Future

import pytest
from ledger import Figures, Ledger, mark
from services import rabbitmq  # noqa: F401  (the session's RabbitMQ)

import celeriac
from celeriac import Config, python_app
from celeriac.errors import DependencyError, SerializationError
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.timeout(240)


@python_app
def step(ledger_dir, key, x, fail=None):
    """x + 1, marked in the ledger; ``fail``: a path, fail once (no mark) if it is absent,
    or ``"always"``."""
    import os
    if fail == "always":
        raise ValueError(f"step {key} always fails")
    if fail is not None and not os.path.exists(fail):
        open(fail, "w").close()
        raise ValueError(f"step {key} fails once")
    mark(ledger_dir, key)
    return x + 1


@python_app
def slow_step(ledger_dir, key, x):
    """x + 1 in 5 ms, marked in the ledger."""
    import time
    mark(ledger_dir, key)
    time.sleep(0.005)
    return x + 1


@python_app
def double(x):
    return 2 * x


@pytest.fixture(scope="module", params=["redis", "amqp"])
def dfk(request, tmp_path_factory):
    celeriac.clear()
    broker = request.getfixturevalue("rabbitmq") if request.param == "amqp" else None
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)], retries=1,
                             broker=broker, run_dir=str(tmp_path_factory.mktemp("chains"))))
    warm = str(tmp_path_factory.mktemp("warm"))  # the apps' run times known
    assert step(warm, "w", 0).result(timeout=60) == slow_step(warm, "w", 0).result() == 1
    assert double(1).result() == 2
    yield d
    d.cleanup()
    celeriac.clear()


def _chain(ledger, n, fail_at=None, fail=None, app=None):
    """n steps, all waiting when the first can go (so they are chained); {key: future}."""
    gate, futures, before = Future(), {}, None
    for key in range(n):
        before = gate if before is None else before
        before = app(ledger.dir, key, before) if app is not None else \
            step(ledger.dir, key, before, fail if key == fail_at else None)
        futures[key] = before
    return gate, futures


def test_a_step_that_fails_once_is_retried_and_the_steps_after_it_run_once_with_its_result(
        dfk, tmp_path):
    ledger = Ledger(tmp_path)
    retries = dfk._tally.retries  # what the run's summary says
    gate, futures = _chain(ledger, 30, fail_at=12, fail=str(tmp_path / "failed-once"))
    gate.set_result(0)
    figures = ledger.figures(futures, {k: k + 1 for k in futures}, timeout=120)
    assert figures == Figures(submitted=30, correct=30, lost=0, ran_twice=0, hung=0)
    assert futures[12].task_record["fail_count"] == 1
    assert dfk._tally.retries - retries == 1  # the steps sent again after it were not retries
    assert dfk.executors["celery"]._link.stats["messages"] < 30  # they did travel together


def test_the_steps_after_a_step_that_fails_for_good_never_run_and_say_why(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    gate, futures = _chain(ledger, 20, fail_at=7, fail="always")
    gate.set_result(0)
    figures = ledger.figures(futures, {k: k + 1 for k in futures}, timeout=120)
    assert figures == Figures(submitted=20, correct=7, lost=13, ran_twice=0, hung=0)
    assert set(ledger.runs()) == {str(k) for k in range(7)}
    with pytest.raises(ValueError, match="step 7 always fails"):
        futures[7].result()
    with pytest.raises(DependencyError, match="task"):
        futures[8].result()
    assert futures[19].task_record["fail_count"] == 0  # not run, not a failed try


def test_a_worker_killed_in_the_middle_of_a_chains_message_loses_no_step(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    per_message = dfk.executors["celery"]._link.chain_limit("slow_step")
    assert 2 <= per_message <= 20  # 5 ms steps: about 10 a message
    gate, futures = _chain(ledger, 60, app=slow_step)
    gate.set_result(0)
    deadline = time.monotonic() + 60
    while "25" not in ledger.runs():
        assert time.monotonic() < deadline, "the chain never reached step 25"
        time.sleep(0.002)
    [pid] = {int(name.split(".")[1]) for name in os.listdir(ledger.dir)
             if name.startswith("25.")}
    os.kill(pid, signal.SIGKILL)
    figures = ledger.figures(futures, {k: k + 1 for k in futures}, timeout=120)
    # The steps of the killed message that had run before the kill run again (their
    # outcomes leave with the message's last): at most one message's worth.
    assert figures.submitted == figures.correct == 60
    assert (figures.lost, figures.hung) == (0, 0)
    assert figures.ran_twice <= per_message, figures


def test_a_step_whose_argument_cannot_be_sent_fails_alone_and_the_rest_say_why(dfk, tmp_path):
    import threading
    ledger = Ledger(tmp_path)
    gate, futures, before = Future(), {}, None
    for key in range(6):
        before = gate if before is None else before
        futures[key] = before = step(ledger.dir, key, before,
                                     threading.Lock() if key == 3 else None)
    gate.set_result(0)
    figures = ledger.figures(futures, {k: k + 1 for k in futures}, timeout=120)
    assert figures == Figures(submitted=6, correct=3, lost=3, ran_twice=0, hung=0)
    with pytest.raises(SerializationError, match="lock"):
        futures[3].result()
    with pytest.raises(DependencyError):
        futures[4].result()
    executor = dfk.executors["celery"]  # nothing left counted as queued (it keeps blocks up)
    assert executor._link.outstanding(executor.queue) == 0


def test_a_chain_of_two_apps_travels_together_and_each_step_gets_its_own_result(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    link = dfk.executors["celery"]._link
    messages = link.stats["messages"]
    gate, futures, before = Future(), {}, None
    for key in range(20):
        before = gate if before is None else before
        futures[key] = before = step(ledger.dir, key, double(before))
    gate.set_result(1)
    x, expected = 1, {}
    for key in range(20):
        x = 2 * x + 1
        expected[key] = x
    figures = ledger.figures(futures, expected, timeout=120)
    assert figures == Figures(submitted=20, correct=20, lost=0, ran_twice=0, hung=0)
    assert link.stats["messages"] - messages == 1  # 40 steps of two apps in one message


def test_many_short_chains_share_messages_and_each_step_gets_its_own_result(dfk):
    link = dfk.executors["celery"]._link
    assert _plus(0, 0).result(timeout=60) == 0  # its run time known: chains start with it
    messages = link.stats["messages"]
    gate = Future()
    futures = {i: double(double(_plus(gate, i))) for i in range(200)}
    gate.set_result(0)
    assert {i: f.result(timeout=120) for i, f in futures.items()} == \
        {i: 4 * i for i in range(200)}
    assert link.stats["messages"] - messages < 50  # 200 chains of 3: not one message each


@python_app
def _plus(x, i):
    return x + i
