"""A finished AppFuture the user still holds keeps its result and a small summary of its
task, not the task record, the call's arguments, the dependents' records or the machinery
of waiting, and it still behaves as a concurrent.futures.Future in every way."""

import concurrent.futures as cf
import gc
import threading
import weakref

import pytest

from celeriac import python_app
from celeriac.orchestrator.states import States, TaskRecord


@python_app
def double(x):
    return 2 * x


@python_app
def fail():
    raise ValueError("no")


class Arg:
    pass


def test_a_finished_future_lets_go_of_its_record_args_and_dependents(manual_dfk, manual):
    arg = Arg()
    upstream = double(arg)
    downstream = double(upstream)
    records = [weakref.ref(upstream.task_record), weakref.ref(downstream.task_record)]
    arg_ref = weakref.ref(arg)
    del arg
    manual.wait_for(1)[0].succeed(21)
    manual.wait_for(2)[1].succeed(42)
    assert (upstream.result(timeout=5), downstream.result(timeout=5)) == (21, 42)
    manual.submissions.clear()  # the test double's own log of calls holds the arguments
    gc.collect()
    assert [r() for r in records] == [None, None]  # upstream's callbacks held downstream's
    assert arg_ref() is None
    assert not any(isinstance(o, TaskRecord) for o in gc.get_referents(upstream))
    assert not any(isinstance(o, (threading.Condition, list)) and o
                   for o in gc.get_referents(upstream.__dict__))


def test_a_finished_future_still_tells_what_a_record_told(dfk):
    ok, bad = double(4), fail()
    assert ok.result(timeout=5) == 8
    assert isinstance(bad.exception(timeout=5), ValueError)
    assert ok.tid == ok.task_record.id == ok.task_record["id"]
    assert ok.task_record.status is States.exec_done and ok.task_status() == "exec_done"
    assert bad.task_record["fail_count"] == 1 and bad.task_record.status is States.failed
    assert ok.task_record.func_name == "double" and ok.stdout is None and ok.outputs == []
    assert ok.task_record.app_fu is ok
    assert "double" in repr(ok) and "exec_done" in repr(ok.task_record)


def test_a_finished_future_still_works_as_a_future(dfk):
    futures = [double(i) for i in range(20)]
    done, not_done = cf.wait(futures, timeout=10)
    assert len(done) == 20 and not not_done
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=10)) == \
        [2 * i for i in range(20)]
    seen = []
    futures[0].add_done_callback(seen.append)  # called at once
    assert seen == [futures[0]]
    assert futures[5].real.result(timeout=5) == 10  # a new future, from a finished one
    with pytest.raises(cf.InvalidStateError):
        futures[0].set_result(1)
    assert futures[0].result(timeout=0) == 0 and futures[0].exception(timeout=0) is None


def test_threads_waiting_on_a_future_wake_when_it_finishes(manual_dfk, manual):
    fut = double(1)
    results = []
    waiters = [threading.Thread(target=lambda: results.append(fut.result(timeout=10)))
               for _ in range(4)]
    for t in waiters:
        t.start()
    manual.wait_for(1)[0].succeed(2)
    for t in waiters:
        t.join(timeout=10)
    assert results == [2, 2, 2, 2]
