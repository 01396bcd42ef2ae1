"""celeriac's futures are made without the ``threading.Condition`` a plain Future makes (eight
objects the cycle collector walks while a task is in flight), yet have every field a plain
Future has and wait like one."""

import concurrent.futures as cf
import threading

import pytest

from celeriac import python_app
from celeriac.orchestrator.futures import AppFuture, LeanFuture


@python_app
def double(x):
    return 2 * x


def test_a_lean_future_has_the_fields_of_a_plain_one():
    """Pins ``Future.__init__``: a Python that adds a field fails here, not in a user's run."""
    plain, lean = vars(cf.Future()), vars(LeanFuture())
    assert sorted(lean) == sorted(plain)
    assert {k: v for k, v in lean.items() if k != "_condition"} == \
        {k: v for k, v in plain.items() if k != "_condition"}


@pytest.fixture
def conditions_made(monkeypatch):
    """How many threading.Condition objects are made from now on (a count, nothing else)."""
    made = []
    real = threading.Condition

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(threading, "Condition", counting)
    return made


def test_submitting_a_task_makes_no_condition(manual_dfk, manual, conditions_made):
    futures = [double(i) for i in range(10)]
    submissions = manual.wait_for(10)
    # The only ones made are the test executor's: it returns plain Futures
    assert len(conditions_made) == len(submissions) == 10
    assert all(isinstance(f, AppFuture) for f in futures)
    for i, submission in enumerate(submissions):
        submission.succeed(2 * i)
    assert [f.result(timeout=5) for f in futures] == [2 * i for i in range(10)]


def test_a_lean_future_wakes_its_waiters_and_works_with_wait():
    fut, got = LeanFuture(), []
    waiter = threading.Thread(target=lambda: got.append(fut.result(timeout=10)))
    waiter.start()
    done, not_done = cf.wait([fut], timeout=0.05)
    assert (done, not_done) == (set(), {fut})
    fut.set_result(7)
    waiter.join(timeout=10)
    assert got == [7]
    assert list(cf.as_completed([fut], timeout=5)) == [fut]
    assert fut.result() == 7 and fut.done() and not fut.cancel()
