"""Checkpoints: when entries are written, what is written, and resuming from them."""

import os
import sqlite3
import threading

import pytest

import celeriac
from celeriac import get_all_checkpoints, get_last_checkpoint, python_app
from celeriac.errors import BadCheckpoint
from celeriac.orchestrator.checkpoint import DB_NAME, CheckpointStore, load_checkpoints
from celeriac.orchestrator.states import States


@python_app(cache=True)
def square(x):
    return x * x


@python_app(cache=True)
def broken(x):
    raise ValueError(f"bad {x}")


def entries(checkpoint_dir):
    path = os.path.join(checkpoint_dir, DB_NAME)
    if not os.path.exists(path):
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError as e:  # looked at while the writer creates its table
        assert "no such table" in str(e)
        return 0
    finally:
        db.close()


def test_task_exit_writes_the_entry_before_the_future_resolves(load_dfk):
    dfk = load_dfk(checkpoint_mode="task_exit")
    seen = []
    fut = square(3)
    fut.add_done_callback(lambda f: seen.append(entries(dfk.checkpoint_dir)))
    assert fut.result(timeout=5) == 9
    assert seen == [1]


def test_dfk_exit_writes_at_cleanup_only(load_dfk):
    dfk = load_dfk(checkpoint_mode="dfk_exit")
    assert [square(i).result(timeout=5) for i in range(3)] == [0, 1, 4]
    assert entries(dfk.checkpoint_dir) == 0
    dfk.cleanup()
    assert entries(dfk.checkpoint_dir) == 3


def test_manual_mode_writes_on_dfk_checkpoint(load_dfk):
    dfk = load_dfk(checkpoint_mode="manual")
    square(4).result(timeout=5)
    assert entries(dfk.checkpoint_dir) == 0
    assert dfk.checkpoint() == dfk.checkpoint_dir
    assert entries(dfk.checkpoint_dir) == 1


def test_periodic_mode_writes_every_period(load_dfk):
    dfk = load_dfk(checkpoint_mode="periodic", checkpoint_period="00:00:01")
    square(5).result(timeout=5)
    done = threading.Event()
    for _ in range(40):
        if entries(dfk.checkpoint_dir) == 1:
            done.set()
            break
        done.wait(0.1)
    assert done.is_set()


def test_failed_tasks_and_uncached_apps_are_not_checkpointed(load_dfk):
    dfk = load_dfk(checkpoint_mode="task_exit")

    @python_app
    def plain(x):
        return x

    with pytest.raises(ValueError):
        broken(1).result(timeout=5)
    assert plain(2).result(timeout=5) == 2
    assert entries(dfk.checkpoint_dir) == 0


def test_an_unpicklable_result_is_returned_and_skipped_with_a_warning(load_dfk, caplog):
    dfk = load_dfk(checkpoint_mode="task_exit")

    @python_app(cache=True)
    def make_lock(x):
        return threading.Lock()

    with caplog.at_level("WARNING", logger="celeriac"):
        assert make_lock(1).result(timeout=5) is not None
    assert entries(dfk.checkpoint_dir) == 0
    assert "not checkpointed" in caplog.text


def test_a_new_run_reuses_checkpointed_results_without_running(load_dfk, manual, tmp_path):
    first = load_dfk(checkpoint_mode="task_exit")
    assert square(6).result(timeout=5) == 36
    first.cleanup()
    assert get_all_checkpoints(str(tmp_path / "runinfo")) == [first.checkpoint_dir]
    load_dfk(manual, checkpoint_files=get_all_checkpoints(str(tmp_path / "runinfo")))
    fut = square(6)
    assert fut.result(timeout=5) == 36
    assert fut.task_record.status is States.memo_done
    square(7)
    assert len(manual.wait_for(1)) == 1 and manual.submissions[0].call.args == (7,)


def test_memo_hits_are_carried_into_the_new_runs_checkpoint(load_dfk, tmp_path):
    first = load_dfk(checkpoint_mode="task_exit")
    square(2).result(timeout=5)
    first.cleanup()
    second = load_dfk(checkpoint_mode="task_exit",
                      checkpoint_files=get_last_checkpoint(str(tmp_path / "runinfo")))
    assert square(2).task_record.app_fu.result(timeout=5) == 4
    assert entries(second.checkpoint_dir) == 1  # get_last_checkpoint alone stays complete


def test_get_all_and_last_checkpoint_list_runs_oldest_first(load_dfk, tmp_path):
    rundir = str(tmp_path / "runinfo")
    assert get_all_checkpoints(rundir) == [] and get_last_checkpoint(rundir) == []
    dirs = []
    for i in range(3):
        dfk = load_dfk(checkpoint_mode="task_exit")
        square(i).result(timeout=5)
        dfk.cleanup()
        dirs.append(dfk.checkpoint_dir)
    assert get_all_checkpoints(rundir) == dirs
    assert get_last_checkpoint(rundir) == [dirs[-1]]
    load_dfk()  # a run that checkpoints nothing is not listed
    assert get_all_checkpoints(rundir) == dirs
    assert get_last_checkpoint(rundir) == []


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(BadCheckpoint, match="no checkpoint in"):
        celeriac.DataFlowKernel(celeriac.Config(
            executors=[celeriac.executors.ThreadPoolExecutor()],
            checkpoint_files=[str(tmp_path / "nowhere")], run_dir=str(tmp_path / "r")))
    assert not os.path.exists(tmp_path / "r")


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    os.makedirs(tmp_path / "cp")
    (tmp_path / "cp" / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(BadCheckpoint, match="cannot read checkpoint"):
        load_checkpoints([str(tmp_path / "cp")])


def test_store_commits_survive_without_close(tmp_path):
    store = CheckpointStore(str(tmp_path / "cp"))
    store.add("h1", b"v1", 1, "f", 0.0)
    assert store.flush() == 1
    # not closed, as after kill -9: another connection sees the entry (WAL replay)
    assert load_checkpoints([str(tmp_path / "cp")]) == {"h1": b"v1"}
    store.close()
    store.close()


def test_loading_many_runs_merges_them_with_later_runs_winning(tmp_path):
    dirs = []
    for run in range(20):
        store = CheckpointStore(str(tmp_path / f"{run:03d}" / "checkpoint"))
        for i in range(500):
            store.add(f"{run}-{i}", b"x", i, "f", 0.0)
        store.add("shared", f"run {run}".encode(), 0, "f", 0.0)
        store.flush()
        store.close()
        dirs.append(store.directory)
    table = load_checkpoints(dirs)
    assert len(table) == 20 * 500 + 1
    assert table["shared"] == b"run 19"


def test_a_failed_write_is_kept_and_written_by_the_next_flush(tmp_path):
    store = CheckpointStore(str(tmp_path / "cp"))
    store.add("h1", b"v1", 1, "f", 0.0)
    store.flush()
    blocker = sqlite3.connect(os.path.join(store.directory, DB_NAME), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store._db.execute("PRAGMA busy_timeout=100")
    store.add("h2", b"v2", 2, "f", 0.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.flush()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert store.flush() == 1
    store.close()
    assert load_checkpoints([store.directory]) == {"h1": b"v1", "h2": b"v2"}


def test_a_database_killed_before_its_table_existed_loads_as_empty(tmp_path):
    os.makedirs(tmp_path / "cp")
    db = sqlite3.connect(str(tmp_path / "cp" / DB_NAME), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")  # what a run killed right after opening leaves
    db.close()
    assert load_checkpoints([str(tmp_path / "cp")]) == {}


def test_runs_past_999_sort_by_number(tmp_path):
    for run in ("998", "999", "1000"):
        store = CheckpointStore(str(tmp_path / run / "checkpoint"))
        store.add(run, b"x", 0, "f", 0.0)
        store.flush()
        store.close()
    assert [os.path.basename(os.path.dirname(c)) for c in get_all_checkpoints(str(tmp_path))] \
        == ["998", "999", "1000"]
    assert get_last_checkpoint(str(tmp_path))[0].endswith("1000/checkpoint")
