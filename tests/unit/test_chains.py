"""A chain's steps in one message: the kernel launches the tasks that wait for one task alone
right after it (``Send.then``), and takes them back whenever they cannot run with its result.

Events in, instructions out, as in test_kernel; here the test carries out what the driver
would (completing a future, then posting its dependents' ``DependencyDone``).
"""

from concurrent.futures import Future

from celeriac.errors import DependencyError, NotRun, WorkerLost
from celeriac.orchestrator import kernel as k
from celeriac.orchestrator.memo import MemoTable
from celeriac.orchestrator.states import States, TaskRecord
from celeriac.wire.call import Call, Earlier


def task(tid, *args, func=pow, executor="x", cache=False, kwargs=None):
    r = TaskRecord(id=tid, func=func, func_name="app", kind="python", args=tuple(args),
                   kwargs=dict(kwargs or {}), executor=executor, cache=cache)
    r.app_fu = Future()
    r.app_fu.task_record = r
    r.depends = [a for a in list(args) + list(r.kwargs.values()) if isinstance(a, Future)]
    return r


def done(value=None, exc=None) -> Future:
    f = Future()
    f.set_exception(exc) if exc is not None else f.set_result(value)
    return f


def chain(kern, n, root, **kw):
    """Tasks 0..n-1, each taking the one before; task 0 takes ``root``."""
    tasks, before = [], root
    for tid in range(n):
        r = task(tid, before, **kw)
        kern.handle(k.Submitted(r))
        tasks.append(r)
        before = r.app_fu
    return tasks


def launched(n, **kernel_args):
    """A kernel, and a chain of n tasks all waiting when its root is done: the kernel's
    instructions for the first one."""
    root, kern = Future(), k.Kernel(**kernel_args)
    tasks = chain(kern, n, root)
    root.set_result(1)
    return kern, tasks, kern.handle(k.DependencyDone(tasks[0]))


def finish(kern, r, value=None, exc=None, try_id=1):
    """The try's outcome, carried out as the driver would: its future, then its dependents."""
    out = kern.handle(k.ExecutorDone(r, try_id, done(value, exc)))
    for i in out:
        if isinstance(i, k.SetResult):
            i.record.app_fu.set_result(i.value)
        elif isinstance(i, k.SetException):
            i.record.app_fu.set_exception(i.exception)
    return out


def test_tasks_waiting_for_one_task_alone_are_launched_with_it_marked_with_its_result():
    kern, (a, b, c), [send] = launched(3, chain_limit=lambda r: 10)
    assert (send.record, send.args) == (a, (1,))
    assert [(s.record, s.try_id, s.args) for s in send.then] == [
        (b, 1, (Earlier(0),)), (c, 1, (Earlier(1),))]
    assert [r.status for r in (a, b, c)] == [States.launched] * 3
    assert (b.after, c.after) == (a, b)


def test_chained_outcomes_resolve_each_future_in_turn():
    kern, (a, b, c), _ = launched(3, chain_limit=lambda r: 10)
    assert finish(kern, a, 2) == [k.SetResult(a, 2)]
    assert kern.handle(k.DependencyDone(b)) == []  # launched already: nothing to do
    assert finish(kern, b, 3) == [k.SetResult(b, 3)]
    assert kern.handle(k.DependencyDone(c)) == []
    assert finish(kern, c, 4) == [k.SetResult(c, 4)]
    assert kern.tasks == {} and (b.after, c.after, a.followers) == (None, None, None)


def test_the_chain_is_as_long_as_the_limit_allows():
    kern, (a, b, c), [send] = launched(3, chain_limit=lambda r: 2)
    assert [s.record for s in send.then] == [b]
    assert c.status is States.pending


def test_a_task_with_several_followers_chains_none_so_they_run_in_parallel():
    root = Future()
    kern = k.Kernel(chain_limit=lambda r: 10)
    a = task(0, root)
    kern.handle(k.Submitted(a))
    for tid in (1, 2):
        kern.handle(k.Submitted(task(tid, a.app_fu)))
    root.set_result(1)
    [send] = kern.handle(k.DependencyDone(a))
    assert send.then == ()


def test_other_executors_and_memoized_calls_are_not_chained():
    root = Future()
    kern = k.Kernel(chain_limit=lambda r: 10, memo=MemoTable())
    a = task(0, root)
    kern.handle(k.Submitted(a))
    for follower in (task(2, a.app_fu, executor="y"), task(3, a.app_fu, cache=True)):
        kern.handle(k.Submitted(follower))
    assert a.followers is None


def test_steps_of_other_apps_are_chained_each_taking_its_share_of_the_message():
    root = Future()
    limits = {pow: 10, divmod: 2}  # 10 calls of pow fill a message, or 2 of divmod
    kern = k.Kernel(chain_limit=lambda r: limits[r.func])
    a = task(0, root)
    kern.handle(k.Submitted(a))
    before, tasks = a, []
    for tid, func in enumerate([divmod, pow, divmod], start=1):
        r = task(tid, before.app_fu, func=func)
        kern.handle(k.Submitted(r))
        tasks.append(r)
        before = r
    root.set_result(1)
    [send] = kern.handle(k.DependencyDone(a))
    assert [s.record for s in send.then] == tasks[:2]  # 0.1 + 0.5 + 0.1; a 0.5 more is over
    assert tasks[2].status is States.pending


def test_no_chains_without_a_limit_or_with_a_limit_of_one():
    for kern in (k.Kernel(), k.Kernel(chain_limit=lambda r: 1)):
        root = Future()
        a, b = chain(kern, 2, root)
        root.set_result(1)
        [send] = kern.handle(k.DependencyDone(a))
        assert send.then == () and b.status is States.pending


def test_a_step_after_a_failed_step_is_not_run_and_fails_with_a_dependency_error():
    kern, (a, b, c), _ = launched(3, chain_limit=lambda r: 10)
    finish(kern, a, 2)
    kern.handle(k.DependencyDone(b))
    [failed] = finish(kern, b, exc=ValueError("boom"))
    assert isinstance(failed.exception, ValueError) and b.status is States.failed
    kern.handle(k.DependencyDone(c))  # posted when b's future failed: c is still launched
    [dep] = finish(kern, c, exc=NotRun("not run"))  # what c's worker said
    assert isinstance(dep.exception, DependencyError) and c.status is States.dep_fail
    assert States.launched in c.history  # its try did not run; it was never counted failed
    assert c.fail_count == 0


def test_a_step_after_a_retried_step_waits_for_the_retry_then_goes_with_its_result():
    kern, (a, b, c), _ = launched(3, retries=1, chain_limit=lambda r: 10)
    finish(kern, a, 2)
    kern.handle(k.DependencyDone(b))
    [retry] = finish(kern, b, exc=ValueError("once"))
    assert (retry.record, retry.try_id, retry.args, retry.then) == (b, 2, (2,), ())
    assert finish(kern, c, exc=NotRun("not run")) == []  # waits for b's retry
    assert c.status is States.pending and c.waiting == 1
    finish(kern, b, 3, try_id=2)
    [send] = kern.handle(k.DependencyDone(c))
    assert (send.record, send.try_id, send.args) == (c, 2, (3,))


def test_a_failed_step_is_retried_with_its_real_arguments():
    kern, (a, b), _ = launched(2, retries=1, chain_limit=lambda r: 10)
    finish(kern, a, 2)
    [retry] = finish(kern, b, exc=ValueError("once"))
    assert (retry.record, retry.try_id, retry.args) == (b, 2, (2,))  # not Earlier(0)
    assert b.after is None


def test_a_lost_message_relaunches_its_first_step_and_the_rest_wait_for_it():
    kern, (a, b, c), _ = launched(3, chain_limit=lambda r: 10)
    lost = WorkerLost("killed")
    [again] = finish(kern, a, exc=lost)
    assert (again.record, again.try_id, again.then) == (a, 2, ())
    assert finish(kern, b, exc=lost) == [] and finish(kern, c, exc=lost) == []
    assert (b.status, c.status, b.lost_count, c.lost_count) == (States.pending,) * 2 + (0, 0)
    finish(kern, a, 2, try_id=2)
    [send] = kern.handle(k.DependencyDone(b))
    assert (send.record, send.try_id, send.args) == (b, 2, (2,))
    assert [(s.record, s.try_id, s.args) for s in send.then] == [(c, 2, (Earlier(1),))]


def test_cancelling_a_step_takes_back_the_steps_after_it_which_then_fail_as_dependents():
    kern, (a, b, c), _ = launched(3, chain_limit=lambda r: 10)
    out = kern.handle(k.Cancel(a))
    assert kinds(out) == ["Revoke", "Revoke", "Revoke", "SetCancelled"]
    assert [i.record for i in out[:3]] == [c, b, a]
    assert (b.status, c.status) == (States.pending, States.pending)
    a.app_fu.cancel()
    [dep] = kern.handle(k.DependencyDone(b))
    assert isinstance(dep, k.SetException) and isinstance(dep.exception, DependencyError)
    # what the worker may still report for the revoked tries is ignored
    assert kern.handle(k.ExecutorDone(c, 1, done(99))) == []


def test_a_step_that_travels_without_its_step_before_waits_and_goes_again():
    kern, (a, b), _ = launched(2, chain_limit=lambda r: 10)
    assert finish(kern, b, exc=NotRun("no step before it")) == []  # a not done: waits
    finish(kern, a, 2)
    [send] = kern.handle(k.DependencyDone(b))
    assert (send.record, send.try_id, send.args) == (b, 2, (2,))


def test_a_chained_call_is_filled_with_the_result_where_the_shallow_rule_looks():
    call = Call("t", 1, "app", "python", args=(Earlier(0), 5),
                kwargs={"inputs": [Earlier(0), 7], "y": Earlier(0), "z": [Earlier(0)]}, after=0)
    filled = call.filled(42)
    assert filled.args == (42, 5) and filled.after is None
    assert filled.kwargs == {"inputs": [42, 7], "y": 42, "z": [Earlier(0)]}


def kinds(instructions):
    return [type(i).__name__ for i in instructions]
