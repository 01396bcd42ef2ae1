"""Cancelling tasks: the kernel's Cancel event and its instructions, and AppFuture.cancel()."""

import os
from concurrent.futures import CancelledError, Future

import pytest

from celeriac import python_app
from celeriac.errors import DependencyError
from celeriac.orchestrator import kernel as k
from celeriac.orchestrator.states import States, TaskRecord


def record(tid=0, args=(), depends=None, cache=False):
    r = TaskRecord(id=tid, func=pow, func_name="app", kind="python", args=tuple(args),
                   kwargs={}, executor="x", cache=cache)
    r.app_fu = Future()
    r.depends = list(depends or [])
    return r


def cancelled_future() -> Future:
    f = Future()
    f.cancel()
    return f


# ----------------------------------------------------------------------------- the kernel


def test_a_waiting_task_is_cancelled_and_never_sent_when_its_dependency_finishes():
    upstream = Future()
    kern, r = k.Kernel(), record(args=(upstream,), depends=[upstream])
    kern.handle(k.Submitted(r))
    assert kern.handle(k.Cancel(r)) == [k.SetCancelled(r)]
    assert r.status is States.cancelled and kern.tasks == {}
    upstream.set_result(1)
    assert kern.handle(k.DependencyDone(r)) == []  # never sent


def test_a_launched_task_is_revoked_then_cancelled_and_its_late_outcome_ignored():
    kern, r = k.Kernel(retries=2), record(args=(1,))
    kern.handle(k.Submitted(r))
    assert kern.handle(k.Cancel(r)) == [k.Revoke(r, 1), k.SetCancelled(r)]
    assert r.history == [States.pending, States.launched] and r.status is States.cancelled
    # whatever the executor reports for the revoked try afterwards changes nothing
    assert kern.handle(k.ExecutorDone(r, 1, cancelled_future())) == []
    failed = Future()
    failed.set_exception(RuntimeError("killed"))
    assert kern.handle(k.ExecutorDone(r, 1, failed)) == []
    assert kern.state_counts[States.cancelled] == 1 and kern.state_counts[States.launched] == 0


def test_a_task_waiting_for_its_retry_is_cancelled_and_the_retry_never_sent():
    import tenacity
    kern, r = k.Kernel(), record()
    r.retry_policy = tenacity.Retrying(wait=tenacity.wait_fixed(30),
                                       stop=tenacity.stop_after_attempt(2))
    kern.handle(k.Submitted(r))
    failed = Future()
    failed.set_exception(ValueError("try 1"))
    [retry] = kern.handle(k.ExecutorDone(r, 1, failed))
    assert isinstance(retry, k.ScheduleRetry)
    assert kern.handle(k.Cancel(r)) == [k.SetCancelled(r)]  # nothing held: no Revoke
    assert kern.handle(k.RetryDue(r)) == []


def test_cancelling_a_finished_task_does_nothing():
    kern, r = k.Kernel(), record()
    kern.handle(k.Submitted(r))
    done = Future()
    done.set_result(3)
    assert k.SetResult(r, 3) in kern.handle(k.ExecutorDone(r, 1, done))
    assert kern.handle(k.Cancel(r)) == []
    assert r.status is States.exec_done


def test_a_revoke_from_outside_ends_the_task_cancelled_and_never_retries_it():
    # Flower's revoke or terminate reaches the orchestrator as a cancelled executor future.
    kern, r = k.Kernel(retries=2), record()
    kern.handle(k.Submitted(r))
    assert kern.handle(k.ExecutorDone(r, 1, cancelled_future())) == [k.SetCancelled(r)]
    assert r.status is States.cancelled and r.try_id == 1


def test_a_dependent_of_a_cancelled_task_fails_with_dependency_error():
    upstream = cancelled_future()
    kern, r = k.Kernel(), record(tid=4, args=(upstream,), depends=[upstream])
    [fail] = kern.handle(k.Submitted(r))
    assert isinstance(fail.exception, DependencyError)
    assert isinstance(fail.exception.__cause__, CancelledError)
    assert r.status is States.dep_fail


def test_a_cancelled_memo_owner_lets_an_identical_call_run():
    from celeriac.orchestrator.memo import MemoTable
    kern = k.Kernel(memo=MemoTable())
    owner, twin = record(tid=0, args=(2,), cache=True), record(tid=1, args=(2,), cache=True)
    assert kinds(kern.handle(k.Submitted(owner))) == ["Send"]
    [watch] = kern.handle(k.Submitted(twin))
    assert watch.futures == (owner.app_fu,)
    kern.handle(k.Cancel(owner))
    owner.app_fu.cancel()  # what SetCancelled does
    assert kinds(kern.handle(k.MemoOwnerDone(twin))) == ["Send"]


def kinds(instructions):
    return [type(i).__name__ for i in instructions]


# ----------------------------------------------------------------------------- AppFuture.cancel


@python_app
def plain(x):
    return 2 * x


def test_cancel_of_a_sent_task_revokes_it_and_its_dependent_fails(manual_dfk, manual):
    fut = plain(3)
    dependent = plain(fut)
    [sent] = manual.wait_for(1)
    assert fut.cancel() is True
    assert fut.cancelled() and fut.done() and fut.task_status() == "cancelled"
    assert sent.future.cancelled()  # the executor was asked to drop it
    with pytest.raises(CancelledError):
        fut.result(timeout=5)
    with pytest.raises(DependencyError, match="failed dependencies from task 0") as info:
        dependent.result(timeout=5)
    assert isinstance(info.value.__cause__, CancelledError)
    assert len(manual.submissions) == 1  # the dependent never ran
    assert fut.cancel() is True  # asking again: still cancelled


def test_cancel_of_a_waiting_task_means_it_never_runs(manual_dfk, manual):
    gate = Future()
    fut = plain(gate)
    assert fut.cancel() is True and fut.cancelled()
    gate.set_result(1)
    manual_dfk.wait_for_current_tasks()
    assert manual.submissions == []


def test_cancel_of_a_finished_task_returns_false_and_keeps_its_result(manual_dfk, manual):
    fut = plain(4)
    manual.wait_for(1)[0].run()
    assert fut.result(timeout=5) == 8
    assert fut.cancel() is False and not fut.cancelled()


def test_a_cancelled_task_counts_as_cancelled_in_the_dfk(manual_dfk, manual):
    fut = plain(1)
    manual.wait_for(1)
    fut.cancel()
    assert manual_dfk.task_state_counts[States.cancelled] == 1
    assert manual_dfk.tasks == {}


# ----------------------------------------------------------------------------- on the worker


def test_the_terminator_kills_the_process_running_a_task_and_all_it_started():
    import subprocess
    import time

    from celeriac.workers.cancel import kill_tree
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 5
    children = []
    while time.monotonic() < deadline and len(children) < 2:
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == proc.pid]
        time.sleep(0.05)
    assert len(children) == 2
    assert kill_tree(proc.pid) == 3
    assert proc.wait(timeout=5) == -9
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.05)
    assert not any(_alive(c) for c in children)


def _parent(pid) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rfind(b")") + 2:].split()[1])
    except (OSError, ValueError):
        return -1


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def test_a_run_file_marked_ended_tells_a_worker_its_run_is_over(tmp_path):
    from celeriac.wire.runfile import RunFile
    from celeriac.workers.run_end import RunEnd
    path = str(tmp_path / "worker.json")
    RunFile(broker_url="redis://127.0.0.1:1/0", key="k", run_id="r1").write(path)
    end = RunEnd(client=None, key=None, run_id="r1", run_file=path)
    assert end.over() is None
    RunFile.mark_ended(path)
    assert "run r1 has ended" in end.over()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"  # it still holds the key
