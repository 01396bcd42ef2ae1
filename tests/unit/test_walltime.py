"""A python app's walltime on a worker: the call runs in a forked child killed on time.

These call ``workers.execute.run_call`` directly, as the worker task does.
"""

import os
import re
import subprocess
import threading
import time

import psutil
import pytest

from celeriac.errors import AppTimeout, SerializationError
from celeriac.wire.call import AppFailed, Call
from celeriac.workers.execute import run_call


def call(name="app", walltime=5.0, args=(), kwargs=None):
    return Call(task_id="run.0.1", tid=0, name=name, kind="python", args=args,
                kwargs=kwargs or {}, walltime=walltime)


def timed_out(func, c):
    start = time.monotonic()
    with pytest.raises(AppFailed) as info:
        run_call(func, c)
    return info.value.failure, time.monotonic() - start


def test_sleeping_call_is_stopped_at_its_walltime():
    failure, elapsed = timed_out(time.sleep, call("sleepy", 0.5, args=(30,)))
    assert isinstance(failure.exception, AppTimeout)
    assert "sleepy" in str(failure.exception) and "0.5" in str(failure.exception)
    assert 0.4 < elapsed < 2.5


def test_call_stuck_in_c_code_holding_the_gil_is_stopped_on_time():
    # catastrophic regex backtracking: one C call that never releases the GIL or checks signals
    def backtrack():
        return re.match(r"(a+)+$", "a" * 40 + "b")

    failure, elapsed = timed_out(backtrack, call("regex", 0.5))
    assert isinstance(failure.exception, AppTimeout)
    assert elapsed < 2.5


def test_call_blocked_on_an_event_is_stopped_on_time():
    def wait_forever():
        threading.Event().wait()

    failure, elapsed = timed_out(wait_forever, call("waiter", 0.5))
    assert isinstance(failure.exception, AppTimeout)
    assert elapsed < 2.5


def test_processes_started_by_the_call_are_killed_with_it(tmp_path):
    pidfile = tmp_path / "pid"

    def spawn_and_wait():
        proc = subprocess.Popen(["sleep", "30"])
        pidfile.write_text(str(proc.pid))
        proc.wait()

    failure, _ = timed_out(spawn_and_wait, call("spawner", 1.0))
    assert isinstance(failure.exception, AppTimeout)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    pytest.fail(f"grandchild {pid} outlived the walltime")


def test_result_comes_back_through_the_fork():
    result = run_call(lambda a, b=0: {"sum": a + b, "pid": os.getpid()},
                      call(args=(2,), kwargs={"b": 3}))
    assert result["sum"] == 5
    assert result["pid"] != os.getpid()  # it really ran in another process


def test_large_result_comes_back_whole():
    blob = os.urandom(3 * (1 << 20))  # bigger than one pipe read
    assert run_call(lambda: blob, call()) == blob


def test_exception_comes_back_through_the_fork_with_its_traceback():
    def fails_inside():
        raise ValueError("bad input 7")

    with pytest.raises(AppFailed) as info:
        run_call(fails_inside, call())
    failure = info.value.failure
    assert type(failure.exception) is ValueError
    assert str(failure.exception) == "bad input 7"
    assert "fails_inside" in failure.traceback and "ValueError: bad input 7" in failure.traceback


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("refuses to pickle")


def test_unpicklable_exception_is_described_instead():
    def raises_unpicklable():
        raise Unpicklable("kept in the message")

    with pytest.raises(AppFailed) as info:
        run_call(raises_unpicklable, call())
    failure = info.value.failure
    assert isinstance(failure.exception, SerializationError)
    message = str(failure.exception)
    assert "Unpicklable" in message and "kept in the message" in message
    assert "raises_unpicklable" in failure.traceback


def test_unpicklable_result_is_a_serialization_error():
    with pytest.raises(AppFailed) as info:
        run_call(lambda: threading.Lock(), call("locky"))
    assert isinstance(info.value.failure.exception, SerializationError)
    assert "result" in str(info.value.failure.exception)


def test_child_that_exits_without_a_result_is_reported():
    with pytest.raises(AppFailed) as info:
        run_call(lambda: os._exit(3), call("quitter"))
    exc = info.value.failure.exception
    assert "quitter" in str(exc) and "ended without a result: exited with code 3" in str(exc)


def test_without_walltime_the_call_runs_in_process():
    assert run_call(os.getpid, call(walltime=None)) == os.getpid()


def test_without_walltime_exceptions_are_captured():
    def fails():
        raise KeyError("k")

    with pytest.raises(AppFailed) as info:
        run_call(fails, call(walltime=None))
    assert isinstance(info.value.failure.exception, KeyError)
    assert "fails" in info.value.failure.traceback


def test_isolate_walltime_false_runs_in_process():
    assert run_call(os.getpid, call(walltime=5), isolate_walltime=False) == os.getpid()
