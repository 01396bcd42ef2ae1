"""Users' done-callbacks: one that waits for another future never hangs the run, one that
raises is logged and the next still runs, and waiting for the run waits for them too."""

import logging
import threading

import pytest

from celeriac import File, python_app

pytestmark = pytest.mark.timeout(30)


@python_app
def echo(x, gate=None):
    if gate is not None:
        gate.wait(10)
    return x


@python_app
def touch(path, outputs=()):
    open(outputs[0].filepath, "w").close()
    return path


def test_a_callback_that_waits_for_a_dependent_future_does_not_hang_the_run(dfk):
    gate = threading.Event()
    first = echo(1, gate=gate)
    second = echo(first)            # runs only once the run has handled `first`
    seen = []
    first.add_done_callback(lambda f: seen.append(second.result(timeout=10)))
    gate.set()
    assert second.result(timeout=10) == 1
    dfk.wait_for_current_tasks()
    assert seen == [1]


def test_a_data_future_callback_may_wait_for_a_dependent_future(dfk, tmp_path):
    gate = threading.Event()
    made = touch(echo("x", gate=gate), outputs=[File(str(tmp_path / "out"))])
    after = echo(made.outputs[0])
    seen = []
    made.outputs[0].add_done_callback(lambda f: seen.append(after.result(timeout=10).filepath))
    gate.set()
    assert after.result(timeout=10).filepath == str(tmp_path / "out")
    dfk.wait_for_current_tasks()
    assert seen == [str(tmp_path / "out")]


def test_a_raising_callback_is_logged_and_the_next_callback_still_runs(dfk, caplog):
    gate = threading.Event()
    fut = echo(2, gate=gate)
    seen = []
    fut.add_done_callback(lambda f: 1 / 0)
    fut.add_done_callback(lambda f: seen.append(f.result()))
    with caplog.at_level(logging.ERROR, logger="celeriac.orchestrator.callbacks"):
        gate.set()
        dfk.wait_for_current_tasks()
    assert seen == [2]
    assert "ZeroDivisionError" in caplog.text and "exception calling callback" in caplog.text


def test_a_callback_added_to_a_finished_future_runs_at_once_in_the_caller(dfk):
    fut = echo(3)
    fut.result(timeout=10)
    threads = []
    fut.add_done_callback(lambda f: threads.append(threading.current_thread()))
    assert threads == [threading.current_thread()]
