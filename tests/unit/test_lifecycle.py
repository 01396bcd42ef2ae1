"""Loading, cleaning up and leaving a DFK: nothing hangs, nothing is left behind."""

import gc
import logging
import os
import threading
import time
import weakref

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.errors import CeleriacError, ConfigurationError, NoDataFlowKernelError
from celeriac.executors import Executor, ThreadPoolExecutor

from .conftest import ManualExecutor


@python_app
def double(x):
    return 2 * x


def config(tmp_path, *executors, **options):
    return Config(list(executors) or [ThreadPoolExecutor(label="threads")],
                  run_dir=str(tmp_path / "runinfo"), **options)


def test_loading_twice_is_a_configuration_error(dfk, tmp_path):
    with pytest.raises(ConfigurationError, match="already been loaded"):
        celeriac.load(config(tmp_path))
    assert celeriac.dfk() is dfk


def test_after_cleanup_a_new_config_can_be_loaded(tmp_path):
    first = celeriac.load(config(tmp_path))
    first.cleanup()
    second = celeriac.load(config(tmp_path))
    try:
        assert celeriac.dfk() is second
        assert double(2).result(timeout=5) == 4
    finally:
        second.cleanup()


def test_cleanup_twice_is_harmless(tmp_path, manual):
    dfk = celeriac.load(config(tmp_path, manual))
    dfk.cleanup()
    dfk.cleanup()
    assert manual.shutdowns == 1


def test_cleanup_forgets_the_loaded_dfk(tmp_path):
    celeriac.load(config(tmp_path)).cleanup()
    with pytest.raises(NoDataFlowKernelError):
        celeriac.dfk()
    with pytest.raises(NoDataFlowKernelError):
        double(1)


def test_submitting_to_a_cleaned_up_dfk_says_so(tmp_path):
    dfk = celeriac.load(config(tmp_path))
    dfk.cleanup()
    with pytest.raises(CeleriacError, match="cleaned up"):
        dfk.submit(lambda: 1, ())


def test_executors_are_started_with_the_run_dir(manual_dfk, manual):
    assert manual.context.run_dir == manual_dfk.run_dir
    assert os.path.isdir(manual_dfk.run_dir)


def test_run_dirs_are_numbered_in_order(tmp_path):
    dirs = []
    for _ in range(3):
        dfk = celeriac.load(config(tmp_path))
        dirs.append(dfk.run_dir)
        dfk.cleanup()
    assert [os.path.basename(d) for d in dirs] == ["000", "001", "002"]
    assert all(os.path.dirname(d) == str(tmp_path / "runinfo") for d in dirs)


def test_orchestrator_log_is_written_under_the_run_dir(tmp_path):
    dfk = celeriac.load(config(tmp_path))
    double(1).result(timeout=5)
    dfk.cleanup()
    log = open(os.path.join(dfk.run_dir, "celeriac.log")).read()
    assert "DFK started" in log and dfk.run_id in log


def test_with_load_exit_mode_wait_waits_for_tasks(tmp_path):
    @python_app
    def slow(x):
        time.sleep(0.2)
        return x

    with celeriac.load(config(tmp_path, exit_mode="wait")):
        futs = [slow(i) for i in range(4)]
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs] == [0, 1, 2, 3]
    with pytest.raises(NoDataFlowKernelError):
        celeriac.dfk()


def test_with_load_exit_mode_cleanup_fails_unfinished_tasks(tmp_path, manual):
    with celeriac.load(config(tmp_path, manual, exit_mode="cleanup")):
        fut = double(1)
    with pytest.raises(CeleriacError, match="cleaned up") as info:
        fut.result(timeout=5)
    assert "double" in str(info.value)
    assert manual.shutdowns == 1


def test_with_load_exit_mode_skip_leaves_the_dfk_running(tmp_path):
    with celeriac.load(config(tmp_path, exit_mode="skip")) as dfk:
        pass
    try:
        assert celeriac.dfk() is dfk
        assert double(3).result(timeout=5) == 6
    finally:
        dfk.cleanup()


def test_exception_in_with_block_cleans_up_without_waiting(tmp_path, manual):
    start = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        with celeriac.load(config(tmp_path, manual, exit_mode="wait")):
            fut = double(1)  # would never finish: the manual executor is never driven
            1 / 0
    assert time.monotonic() - start < 5
    assert isinstance(fut.exception(timeout=1), CeleriacError)


def test_unfinished_tasks_fail_rather_than_hang_after_cleanup(manual_dfk, manual):
    gate = double(1)                      # launched, never completed
    waiting = double(gate)                # never launched: its dependency is pending
    manual.wait_for(1)
    manual_dfk.cleanup()
    for fut in (gate, waiting):
        assert isinstance(fut.exception(timeout=2), CeleriacError)
    assert manual_dfk.tasks == {}


def test_finished_task_records_are_dropped(manual_dfk, manual):
    done, pending = double(1), double(2)
    manual.wait_for(2)[0].run()
    assert done.result(timeout=5) == 2
    assert done.tid not in manual_dfk.tasks
    assert pending.tid in manual_dfk.tasks


def test_finished_tasks_do_not_keep_their_arguments_alive(dfk):
    class Big:
        pass

    arg = Big()
    ref = weakref.ref(arg)

    @python_app
    def size(obj):
        return 1

    fut = size(arg)
    assert fut.result(timeout=5) == 1
    del arg
    gc.collect()
    assert ref() is None


def test_wait_for_current_tasks_waits_for_all_of_them(dfk):
    @python_app
    def slow(x):
        time.sleep(0.1)
        return x

    futs = [slow(i) for i in range(6)]
    celeriac.wait_for_current_tasks()
    assert all(f.done() for f in futs)


def test_wait_for_current_tasks_returns_despite_failures(dfk):
    @python_app
    def fails():
        raise ValueError("x")

    futs = [fails(), double(fails())]
    celeriac.wait_for_current_tasks()
    assert all(f.exception() is not None for f in futs)


def test_wait_for_current_tasks_includes_dependents_submitted_later(manual_dfk, manual):
    first = double(1)
    second = double(first)
    waiter = threading.Thread(target=celeriac.wait_for_current_tasks)
    waiter.start()
    manual.wait_for(1)[0].run()
    manual.wait_for(2)[1].run()
    waiter.join(5)
    assert not waiter.is_alive()
    assert second.result(timeout=1) == 4


def _celeriac_handlers():
    return list(logging.getLogger("celeriac").handlers)


class BrokenExecutor(Executor):
    label = "broken"

    def start(self, context):
        raise RuntimeError("cannot start")

    def submit(self, func, call, resource_specification):
        raise AssertionError("never reached")


def test_executor_failing_to_start_leaves_nothing_loaded(tmp_path):
    before = _celeriac_handlers()
    with pytest.raises(RuntimeError, match="cannot start"):
        celeriac.load(config(tmp_path, BrokenExecutor()))
    with pytest.raises(NoDataFlowKernelError):
        celeriac.dfk()
    assert _celeriac_handlers() == before  # its log file was closed
    celeriac.load(config(tmp_path)).cleanup()


def test_reserved_label_refusal_leaves_no_log_handler_behind(tmp_path):
    before = _celeriac_handlers()
    with pytest.raises(ConfigurationError, match="reserved"):
        celeriac.load(config(tmp_path, ThreadPoolExecutor(label="_celeriac_internal")))
    assert _celeriac_handlers() == before


def test_cleanup_detaches_the_run_log(tmp_path):
    before = _celeriac_handlers()
    celeriac.load(config(tmp_path)).cleanup()
    assert _celeriac_handlers() == before


def test_cleanup_with_queued_tasks_fails_them_without_callback_errors(load_dfk, caplog):
    dfk = load_dfk(ThreadPoolExecutor(label="one", max_threads=1))
    release = threading.Event()

    @python_app
    def hold():
        release.wait(5)

    running, queued = hold(), hold()  # the second waits in the pool's queue
    try:
        with caplog.at_level(logging.ERROR):
            dfk.cleanup()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        with pytest.raises(CeleriacError, match="cleaned up"):
            queued.result(timeout=2)
        with pytest.raises(CeleriacError, match="cleaned up"):
            running.result(timeout=2)
    finally:
        release.set()


def test_a_config_without_executors_can_be_loaded_twice(tmp_path, monkeypatch):
    """The default executor is made per DFK, not stored into the user's Config."""
    import celeriac.orchestrator.executors.celery as celery_executor

    # No broker in unit tests: stand the default in with a thread pool of the same label.
    monkeypatch.setattr(celery_executor, "CeleryExecutor",
                        lambda label: ThreadPoolExecutor(label=label))
    config = Config(run_dir=str(tmp_path))
    for _ in range(2):
        with celeriac.load(config) as dfk:
            assert list(dfk.executors) == ["celery"]
    assert config.executors == []


def test_a_config_can_be_loaded_again_on_the_same_executors_as_in_parsl(tmp_path):
    config = Config([ThreadPoolExecutor(label="again")], run_dir=str(tmp_path))
    for expected in (2, 4):
        with celeriac.load(config):
            assert double(expected // 2).result(timeout=5) == expected


def test_task_state_counts_and_the_summary_at_cleanup(load_dfk, manual, caplog):
    dfk = load_dfk(manual)
    done, failing, waiting = double(1), double(2), double(3)
    subs = manual.wait_for(3)
    subs[0].run()
    subs[1].fail(OSError("no"))
    done.result(timeout=5)
    failing.exception(timeout=5)
    counts = {state.name: n for state, n in dfk.task_state_counts.items() if n}
    assert counts == {"exec_done": 1, "failed": 1, "launched": 1}
    assert not dfk.cleanup_called
    with caplog.at_level(logging.INFO, logger="celeriac"):
        dfk.cleanup()
    assert dfk.cleanup_called
    assert "Summary of tasks in DFK: exec_done 1, failed 2" in caplog.text
    assert waiting.exception(timeout=5) is not None


def test_executors_can_be_added_to_a_running_dfk(load_dfk):
    dfk = load_dfk()

    @python_app(executors=["extra"])
    def there():
        return threading.current_thread().name

    with pytest.raises(ConfigurationError, match="extra"):
        there()
    dfk.add_executors([ThreadPoolExecutor(label="extra")])
    assert there().result(timeout=5).startswith("celeriac-extra")
    with pytest.raises(ConfigurationError, match="already in use"):
        dfk.add_executors([ThreadPoolExecutor(label="extra")])


class _LateExecutor(ManualExecutor):
    """Results keep arriving from another thread while the DFK cleans up."""

    def shutdown(self) -> None:
        super().shutdown()
        threading.Thread(target=lambda: [s.succeed(1) for s in self.submissions]).start()


def test_cleanup_racing_with_arriving_results_completes_each_future_once(load_dfk):
    for _ in range(5):
        late = _LateExecutor("late")
        dfk = load_dfk(late)

        @python_app(data_flow_kernel=dfk)
        def one():
            return 1

        futures = [one() for _ in range(2000)]
        dfk.cleanup()  # must not raise, and must close everything
        assert dfk._context is not None and dfk._cleaned
        for fut in futures:  # each resolved one way or the other
            fut.exception(timeout=5)
