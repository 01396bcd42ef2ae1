"""The dataflow kernel on its own: events in, instructions out; no threads, no executor, no I/O."""

from concurrent.futures import Future

import pytest

from celeriac.errors import (
    DependencyError,
    InvalidTransition,
    JoinError,
    WorkerLost,
)
from celeriac.orchestrator import kernel as k
from celeriac.orchestrator.memo import MemoTable
from celeriac.orchestrator.states import States, TaskRecord


def record(tid=0, args=(), kwargs=None, kind="python", cache=False, depends=None):
    r = TaskRecord(id=tid, func=pow, func_name="app", kind=kind, args=tuple(args),
                   kwargs=dict(kwargs or {}), executor="x", cache=cache)
    r.app_fu = Future()
    r.depends = list(depends or [])
    return r


def done(value=None, exc=None) -> Future:
    f = Future()
    f.set_exception(exc) if exc is not None else f.set_result(value)
    return f


def kinds(instructions):
    return [type(i).__name__ for i in instructions]


def test_a_task_with_no_dependencies_is_sent_at_once_as_try_1():
    kern, r = k.Kernel(), record(args=(2, 5))
    [send] = kern.handle(k.Submitted(r))
    assert send == k.Send(r, 1, (2, 5), {})
    assert r.status is States.launched and kern.tasks == {0: r}


def test_state_counts_follow_every_move():
    kern, a, b = k.Kernel(), record(tid=0), record(tid=1)
    kern.handle(k.Submitted(a))
    kern.handle(k.Submitted(b))
    assert kern.state_counts[States.launched] == 2
    kern.handle(k.ExecutorDone(a, 1, done(1)))
    kern.handle(k.ExecutorDone(b, 1, done(exc=OSError())))
    counts = {s.name: n for s, n in kern.state_counts.items() if n}
    assert counts == {"exec_done": 1, "failed": 1}


def test_a_result_resolves_the_future_and_forgets_the_task():
    kern, r = k.Kernel(), record(args=(1,))
    kern.handle(k.Submitted(r))
    assert kern.handle(k.ExecutorDone(r, 1, done(32))) == [k.SetResult(r, 32)]
    assert r.status is States.exec_done and kern.tasks == {}
    assert r.args == () and r.resolved is None  # a finished record keeps nothing it ran with


def test_a_task_waits_for_its_unfinished_dependencies_then_is_sent_with_their_values():
    pending, finished = Future(), done(10)
    kern, r = k.Kernel(), record(args=(pending, finished), depends=[pending, finished])
    [watch] = kern.handle(k.Submitted(r))
    assert watch == k.Watch(r, (pending,), k.DependencyDone)
    pending.set_result(3)
    assert kern.handle(k.DependencyDone(r)) == [k.Send(r, 1, (3, 10), {})]


def test_a_failed_dependency_fails_the_task_without_sending_it():
    upstream = done(exc=ValueError("root"))
    kern, r = k.Kernel(), record(tid=5, args=(upstream,), depends=[upstream])
    [fail] = kern.handle(k.Submitted(r))
    assert isinstance(fail, k.SetException) and isinstance(fail.exception, DependencyError)
    assert isinstance(fail.exception.__cause__, ValueError)
    assert r.status is States.dep_fail


def test_a_failed_try_within_the_retry_budget_is_sent_again_as_the_next_try():
    kern, r = k.Kernel(retries=1), record()
    kern.handle(k.Submitted(r))
    again = kern.handle(k.ExecutorDone(r, 1, done(exc=OSError("flaky"))))
    assert again == [k.Send(r, 2, (), {})]
    [fail] = kern.handle(k.ExecutorDone(r, 2, done(exc=OSError("still"))))
    assert isinstance(fail, k.SetException) and str(fail.exception) == "still"
    assert "failed after 2 tries" in fail.exception.__notes__[0]


def test_an_outcome_of_a_superseded_try_is_ignored():
    kern, r = k.Kernel(retries=1), record()
    kern.handle(k.Submitted(r))
    kern.handle(k.ExecutorDone(r, 1, done(exc=OSError("flaky"))))
    assert kern.handle(k.ExecutorDone(r, 1, done(99))) == []
    assert kern.handle(k.ExecutorDone(r, 2, done(7))) == [k.SetResult(r, 7)]


def test_a_retry_with_a_wait_is_scheduled_not_slept_and_sent_when_due():
    import tenacity
    policy = tenacity.Retrying(wait=tenacity.wait_fixed(30), stop=tenacity.stop_after_attempt(2))
    kern, r = k.Kernel(), record()
    r.retry_policy = policy
    kern.handle(k.Submitted(r))
    assert kern.handle(k.ExecutorDone(r, 1, done(exc=OSError()))) == [k.ScheduleRetry(r, 30)]
    assert r.status is States.pending
    assert kern.handle(k.RetryDue(r)) == [k.Send(r, 2, (), {})]


def test_a_lost_worker_is_relaunched_without_spending_the_retry_budget():
    kern, r = k.Kernel(retries=0, worker_lost_retries=1), record()
    kern.handle(k.Submitted(r))
    lost = done(exc=WorkerLost("gone"))
    assert kern.handle(k.ExecutorDone(r, 1, lost)) == [k.Send(r, 2, (), {})]
    [fail] = kern.handle(k.ExecutorDone(r, 2, done(exc=WorkerLost("gone again"))))
    assert isinstance(fail.exception, WorkerLost)


def test_a_refused_submission_fails_the_task():
    kern, r = k.Kernel(), record()
    kern.handle(k.Submitted(r))
    refusal = RuntimeError("queue full")
    assert kern.handle(k.SubmitFailed(r, 1, refusal)) == [k.SetException(r, refusal)]


def test_a_cached_call_runs_once_and_its_twin_takes_the_memo_result():
    memo = MemoTable()
    kern = k.Kernel(memo=memo)
    first, twin = record(tid=0, args=(3,), cache=True), record(tid=1, args=(3,), cache=True)
    assert kinds(kern.handle(k.Submitted(first))) == ["Send"]
    [watch] = kern.handle(k.Submitted(twin))  # identical call in flight: wait for it
    assert watch == k.Watch(twin, (first.app_fu,), k.MemoOwnerDone)
    out = kern.handle(k.ExecutorDone(first, 1, done(27)))
    assert out == [k.Checkpoint(first, 27), k.SetResult(first, 27)]
    first.app_fu.set_result(27)  # what the driver does with SetResult
    assert kern.handle(k.MemoOwnerDone(twin)) == [k.Checkpoint(twin, 27), k.SetResult(twin, 27)]
    assert twin.status is States.memo_done


def test_a_failed_cached_call_fails_its_identical_twin_with_the_same_exception():
    memo = MemoTable()
    kern = k.Kernel(memo=memo)
    first, twin = record(tid=0, args=(3,), cache=True), record(tid=1, args=(3,), cache=True)
    kern.handle(k.Submitted(first))
    kern.handle(k.Submitted(twin))
    [fail] = kern.handle(k.ExecutorDone(first, 1, done(exc=ValueError("no"))))
    first.app_fu.set_exception(fail.exception)
    assert kern.handle(k.MemoOwnerDone(twin)) == [k.SetException(twin, fail.exception)]
    assert twin.status is States.failed and twin.try_id == 0  # never sent


def test_a_join_app_waits_for_the_futures_its_body_returned():
    inner = [Future(), Future()]
    kern, r = k.Kernel(), record(kind="join")
    kern.handle(k.Submitted(r))
    assert kern.handle(k.ExecutorDone(r, 1, done(inner))) == [
        k.Watch(r, tuple(inner), k.JoinedDone)]
    assert r.status is States.joining
    inner[0].set_result("a")
    assert kern.handle(k.JoinedDone(r)) == []
    inner[1].set_result("b")
    assert kern.handle(k.JoinedDone(r)) == [k.SetResult(r, ["a", "b"])]


def test_a_failed_joined_future_fails_the_join_with_join_error():
    inner = done(exc=KeyError("k"))
    kern, r = k.Kernel(), record(kind="join")
    kern.handle(k.Submitted(r))
    kern.handle(k.ExecutorDone(r, 1, done(inner)))
    [fail] = kern.handle(k.JoinedDone(r))
    assert isinstance(fail.exception, JoinError) and isinstance(fail.exception.__cause__, KeyError)


def test_cleanup_fails_every_unfinished_task_through_legal_moves():
    waiting_on = Future()
    kern = k.Kernel()
    launched, pending = record(tid=0), record(tid=1, args=(waiting_on,), depends=[waiting_on])
    kern.handle(k.Submitted(launched))
    kern.handle(k.Submitted(pending))
    assert kern.handle(k.Closing()) == []
    # While executors shut down, what they cancel is left for Closed to fail, with a reason.
    cancelled = Future()
    cancelled.cancel()
    assert kern.handle(k.ExecutorDone(launched, 1, cancelled)) == []
    out = kern.handle(k.Closed())
    assert kinds(out) == ["SetException", "SetException"]
    assert all("had not finished when the DataFlowKernel was cleaned up" in str(i.exception)
               for i in out)
    assert launched.history == [States.pending, States.launched]
    assert pending.history == [States.pending] and pending.status is States.failed
    assert kern.tasks == {}
    waiting_on.set_result(1)
    assert kern.handle(k.DependencyDone(pending)) == []  # too late: nothing more happens


def test_an_executor_cancelling_a_task_outside_cleanup_ends_it_cancelled():
    kern, r = k.Kernel(retries=2), record()
    kern.handle(k.Submitted(r))
    cancelled = Future()
    cancelled.cancel()
    assert kern.handle(k.ExecutorDone(r, 1, cancelled)) == [k.SetCancelled(r)]
    assert r.status is States.cancelled  # a revoke is never retried


def test_each_task_is_completed_once_whatever_arrives_after_its_end():
    kern, r = k.Kernel(retries=2), record()
    kern.handle(k.Submitted(r))
    assert kinds(kern.handle(k.ExecutorDone(r, 1, done(1)))) == ["SetResult"]
    assert kern.handle(k.ExecutorDone(r, 1, done(2))) == []
    assert kern.handle(k.RetryDue(r)) == []
    assert kern.handle(k.SubmitFailed(r, 1, OSError())) == []
    assert kern.handle(k.Closed()) == []
    with pytest.raises(InvalidTransition, match="task 0: illegal move exec_done -> launched"):
        r.move(States.launched)
