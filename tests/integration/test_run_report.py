"""`celeriac status` and `celeriac report` on real runs; the report opened in a real headless
Chromium, which takes a screenshot and dumps the DOM it rendered."""

import os
import re
import shutil
import subprocess
import sys

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.executors import ThreadPoolExecutor

pytestmark = pytest.mark.timeout(180)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@python_app
def prepare(x):
    return x


@python_app
def analyse(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def run_workflow(run_dir, n=5):
    """n prepare -> analyse pairs; analyse(3) fails (after one retry)."""
    config = Config(executors=[ThreadPoolExecutor(max_threads=4)], retries=1, run_dir=run_dir,
                    exit_mode="wait")
    with celeriac.load(config) as dfk:
        futures = [analyse(prepare(i)) for i in range(n)]
    assert [f.exception() is not None for f in futures].count(True) == (1 if n > 3 else 0)
    return dfk.run_dir


def celeriac_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "celeriac", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=env)


def chromium():
    path = shutil.which("chromium")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail("chromium is missing: run tests/scripts/install_test_packages.sh")
        pytest.skip("chromium is not installed (tests/scripts/install_test_packages.sh, root)")
    return path


def render(report, tmp_path):
    """(DOM text, screenshot path) of ``report`` as headless Chromium renders it."""
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
         "--window-size=1200,1600", f"--screenshot={shot}", "--dump-dom",
         f"file://{report}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, shot


def test_status_prints_the_newest_runs_counts_and_failure(tmp_path):
    run_dir = run_workflow(str(tmp_path / "runinfo"))
    done = celeriac_cli("status", cwd=tmp_path)  # default: the newest run under ./runinfo
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"in {run_dir}" in out
    assert "tasks 10: exec_done 9, failed 1; 1 retries" in out
    assert re.search(r"analyse\s+exec_done 4, failed 1", out)
    assert "failed: task 7 (analyse): ValueError: three is not allowed" in out


def test_status_without_a_run_says_where_it_looked(tmp_path):
    done = celeriac_cli("status", cwd=tmp_path)
    assert done.returncode == 2
    assert "no run database (monitoring.sqlite3)" in done.stderr
    assert str(tmp_path / "runinfo") in done.stderr


def test_the_report_renders_in_chromium_with_counts_failures_and_graph(tmp_path):
    run_dir = run_workflow(str(tmp_path / "runinfo"))
    done = celeriac_cli("report", run_dir)
    assert done.returncode == 0, done.stderr
    report = done.stdout.strip()
    assert report == os.path.join(run_dir, "report.html")
    text = open(report).read()
    assert not re.search(r"(src|href)=|https?://", text)  # self-contained: fetches nothing
    dom, shot = render(report, tmp_path)
    assert os.path.getsize(shot) > 10_000
    assert '<span id="total-tasks">10</span>' in dom
    assert re.search(r'<tr data-state="exec_done"><td>exec_done</td><td class="n">9</td>', dom)
    assert re.search(r'<tr data-state="failed"><td>failed</td><td class="n">1</td>', dom)
    failed = re.search(r'<tr class="failed" data-task="7">(.*?)</tr>', dom, re.S)
    assert failed and "ValueError: three is not allowed" in failed[1]
    graph = dom[dom.index('<svg id="graph"'):]
    assert len(re.findall(r'<g class="node ', graph)) == 10   # one node per task
    assert re.findall(r'<g class="node failed" data-node="(\d+)"', graph) == ["7"]
    assert len(re.findall(r'<line class="edge"', graph)) == 5
    gantt = dom[dom.index('<svg id="gantt"'):dom.index('<svg id="graph"')]
    assert len(re.findall(r'<rect class="bar ', gantt)) == 10


def test_a_large_runs_graph_shows_one_node_per_app(tmp_path):
    run_dir = run_workflow(str(tmp_path / "runinfo"), n=400)  # 800 tasks
    done = celeriac_cli("report", run_dir)
    assert done.returncode == 0, done.stderr
    dom, _ = render(done.stdout.strip(), tmp_path)
    assert '<span id="total-tasks">800</span>' in dom
    graph = dom[dom.index('<svg id="graph"'):]
    nodes = re.findall(r'<g class="node (\w+)" data-node="(\w+)"', graph)
    assert sorted(nodes) == [("exec_done", "prepare"), ("failed", "analyse")]
    assert re.search(r'>400</text>', graph)  # the app edge stands for 400 dependencies


def _flaky_on_disk(marker):
    """Fails on its first try and succeeds on its second (the tries are counted in a file)."""
    with open(marker, "a") as fh:
        fh.write("x\n")
    with open(marker) as fh:
        if len(fh.read().split()) < 2:
            raise OSError("first try fails")
    return "ok"


def _fail():
    raise RuntimeError("broken on purpose")


def _inc(x):
    return x + 1


@pytest.mark.integration
def test_the_database_of_a_celery_run_has_the_retry_the_dep_fail_the_memo_hit_and_blocks(
        tmp_path):
    from celeriac.executors import CeleryExecutor
    flaky, fail, inc = python_app(_flaky_on_disk), python_app(_fail), python_app(_inc)
    cached = python_app(_inc, cache=True)
    config = Config([CeleryExecutor(label="celery", workers_per_node=1)], retries=1,
                    run_dir=str(tmp_path / "runinfo"))
    celeriac.clear()
    with celeriac.load(config) as dfk:
        assert flaky(str(tmp_path / "marker")).result(timeout=60) == "ok"
        assert isinstance(inc(fail()).exception(timeout=60), celeriac.errors.DependencyError)
        assert cached(1).result(timeout=60) == 2
        assert cached(1).result(timeout=60) == 2
    db = os.path.join(dfk.run_dir, "monitoring.sqlite3")
    import sqlite3
    conn = sqlite3.connect(db)
    tasks = conn.execute("SELECT task_id, app, executor, state, tries FROM tasks "
                         "ORDER BY task_id").fetchall()
    tries = conn.execute("SELECT task_id, try, outcome FROM all_tries ORDER BY task_id, try"
                         ).fetchall()
    blocks = conn.execute("SELECT executor, block, job_id IS NOT NULL, state, "
                          "time_submitted <= time_ended FROM blocks").fetchall()
    conn.close()
    assert tasks == [(0, "_flaky_on_disk", "celery", "exec_done", 2),
                     (1, "_fail", "celery", "failed", 2),
                     (2, "_inc", "celery", "dep_fail", 0),
                     (3, "_inc", "celery", "exec_done", 1),
                     (4, "_inc", "celery", "memo_done", 0)]
    assert tries == [(0, 1, "failed"), (0, 2, "ok"), (1, 1, "failed"), (1, 2, "failed"),
                     (3, 1, "ok")]
    assert blocks == [("celery", "0", 1, "cancelled", 1)]
