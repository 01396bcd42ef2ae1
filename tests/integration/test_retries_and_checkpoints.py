"""Retries, memoization and checkpoints with real workers, and resuming a killed workflow."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import tenacity

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator.checkpoint import DB_NAME

pytestmark = pytest.mark.integration


def _count_and_fail_until(marker, succeed_on):
    """Append a line to ``marker``; raise OSError until the line count reaches succeed_on."""
    with open(marker, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    with open(marker) as fh:
        n = len(fh.read().split())
    if n < succeed_on:
        raise OSError(f"try {n} failed")
    return n


def _mark_and_sleep(marker, x, seconds):
    with open(marker, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return x * x


backoff = python_app(_count_and_fail_until, retry_policy=tenacity.Retrying(
    retry=tenacity.retry_if_exception_type(OSError), wait=tenacity.wait_fixed(0.3),
    stop=tenacity.stop_after_attempt(3)))
cached_sleep = python_app(_mark_and_sleep, cache=True)
no_retries_cached_sleep = python_app(_mark_and_sleep, cache=True,
                                     retry_policy={"stop": tenacity.stop_after_attempt(1)})


@pytest.fixture(scope="module")
def dfk(run_dir):
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)],
                             run_dir=run_dir, checkpoint_mode="task_exit"))
    yield d
    d.cleanup()
    celeriac.clear()


def lines(path):
    with open(path) as fh:
        return fh.read().split()


def checkpointed(checkpoint_dir):
    """{task id: func name} of the entries in a run's checkpoint (read as a new process would)."""
    db = sqlite3.connect(os.path.join(checkpoint_dir, DB_NAME))
    try:
        return dict(db.execute("SELECT task_id, func_name FROM results").fetchall())
    finally:
        db.close()


def test_tenacity_policy_retries_on_real_workers_with_backoff(dfk, tmp_path):
    marker = str(tmp_path / "tries")
    started = time.monotonic()
    assert backoff(marker, 3).result(timeout=60) == 3
    assert time.monotonic() - started >= 0.6  # two waits of 0.3 s
    fut = backoff(str(tmp_path / "never"), 99)
    with pytest.raises(OSError, match="try 3 failed") as info:
        fut.result(timeout=60)
    assert any("after 3 tries" in n for n in info.value.__notes__)
    assert len(lines(str(tmp_path / "never"))) == 3


def test_identical_cached_calls_run_once_and_are_checkpointed_once(dfk, tmp_path):
    marker = str(tmp_path / "ran")
    futures = [cached_sleep(marker, 12, 0.5) for _ in range(5)]
    assert [f.result(timeout=60) for f in futures] == [144] * 5
    assert len(lines(marker)) == 1
    assert list(checkpointed(dfk.checkpoint_dir).values()).count("_mark_and_sleep") >= 1


@pytest.mark.timeout(120)
def test_worker_killed_mid_task_does_not_spend_the_retry_budget(dfk, tmp_path):
    marker = str(tmp_path / "killed")
    fut = no_retries_cached_sleep(marker, 7, 3)  # its policy allows no retry at all
    deadline = time.monotonic() + 60
    while not (os.path.exists(marker) and lines(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(int(lines(marker)[0]), signal.SIGKILL)
    assert fut.result(timeout=90) == 49
    assert len(lines(marker)) == 2 and fut.task_record.lost_count == 1
    assert fut.tid in checkpointed(dfk.checkpoint_dir)


WORKFLOW = textwrap.dedent("""
    import os, sys, time
    import celeriac
    from celeriac import Config, python_app, get_all_checkpoints
    from celeriac.executors import CeleryExecutor
    from concurrent.futures import as_completed

    run_dir, n = sys.argv[1], int(sys.argv[2])

    @python_app(cache=True)
    def step(i):
        import os, time  # MARKS differs per run, so it is not an argument (that changes keys)
        open(os.path.join(os.environ["MARKS"], f"ran.{i}"), "a").close()
        time.sleep(0.02)
        return i * i

    celeriac.load(Config([CeleryExecutor(workers_per_node=2)], run_dir=run_dir,
                         checkpoint_mode="task_exit",
                         checkpoint_files=get_all_checkpoints(run_dir)))
    futures = {step(i): i for i in range(n)}
    for fut in as_completed(futures):
        print("done", futures[fut], fut.result(), flush=True)
    print("all done", flush=True)
    celeriac.dfk().cleanup()
""")


@pytest.mark.timeout(180)
def test_rerun_after_kill_9_runs_only_what_did_not_finish(tmp_path):
    """The hard way: a real run killed midway, then re-run with get_all_checkpoints()."""
    run_dir, n = str(tmp_path / "runinfo"), 120
    first_marks, second_marks = tmp_path / "first", tmp_path / "second"
    first_marks.mkdir()
    second_marks.mkdir()
    first = subprocess.Popen([sys.executable, "-c", WORKFLOW, run_dir, str(n)],
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "MARKS": str(first_marks)})
    done_first = set()
    try:
        for line in first.stdout:
            if line.startswith("done"):
                done_first.add(int(line.split()[1]))
            if len(done_first) >= 40:
                break
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert len(done_first) >= 40
    [checkpoint_dir] = celeriac.get_all_checkpoints(run_dir)
    saved = set(checkpointed(checkpoint_dir))  # loads although the writer was killed
    assert done_first <= saved  # every resolved future had its entry written first
    assert len(saved) < n      # killed midway: some were left to do

    second = subprocess.run([sys.executable, "-c", WORKFLOW, run_dir, str(n)],
                            capture_output=True, text=True, timeout=150,
                            env={**os.environ, "MARKS": str(second_marks)})
    assert second.returncode == 0, second.stderr[-3000:]
    results = {int(p[1]): int(p[2]) for p in (ln.split() for ln in second.stdout.splitlines())
               if p[0] == "done"}
    assert results == {i: i * i for i in range(n)}
    ran_again = {int(name.split(".")[1]) for name in os.listdir(second_marks)}
    assert ran_again == set(range(n)) - saved  # finished ones skipped, every other one ran


KILLED_WRITER = textwrap.dedent("""
    import sys
    import celeriac
    from celeriac import Config, python_app
    from celeriac.executors import ThreadPoolExecutor

    @python_app(cache=True)
    def blob(i):
        return bytes(2000) + str(i).encode()

    celeriac.load(Config([ThreadPoolExecutor(max_threads=4)], run_dir=sys.argv[1],
                         checkpoint_mode="task_exit"))
    for i in range(10**9):
        blob(i).result()
        print(i, flush=True)
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("after_lines", [5, 300, 2000])
def test_kill_9_while_writing_leaves_a_loadable_checkpoint_with_every_entry(tmp_path,
                                                                            after_lines):
    run_dir = str(tmp_path / "runinfo")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, run_dir],
                            stdout=subprocess.PIPE, text=True)
    last = -1
    try:
        for line in proc.stdout:
            last = int(line)
            if last >= after_lines:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    table = celeriac.orchestrator.checkpoint.load_checkpoints(
        celeriac.get_all_checkpoints(run_dir))
    assert len(table) >= last + 1
