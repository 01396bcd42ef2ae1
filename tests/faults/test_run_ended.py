"""A worker whose run has ended exits within seconds, saying so in one line, instead of
logging `Connection refused` for two minutes: started by hand after the run (embedded broker
gone, or a shared broker still up), running when the run ends, or pointed at a broker that is
gone with no word from its run."""

import os
import subprocess
import sys
import time

import pytest
import redis

import celeriac
from celeriac import Config
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.wire.alive import live_workers
from celeriac.wire.runfile import RunFile

EXIT_WITHIN = 60  # generous: the point is seconds, not the two minutes of the idle timeout


def start_worker(run_file: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celeriac", "worker", "--run-file", run_file,
         "--executor", "celery", "--processes", "1", "--idle-timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, list]:
    """Wait for the worker to exit; its exit code and its non-empty output lines."""
    try:
        out, err = proc.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the worker was still running after {EXIT_WITHIN}s:\n{err[-3000:]}")
    return proc.returncode, [line for line in (out + err).splitlines() if line.strip()]


def run_and_clean_up(tmp_path, **options) -> tuple[str, str]:
    """A run (no workers of its own) that has ended; its run file and id."""
    celeriac.clear()
    dfk = celeriac.load(Config([CeleryExecutor(label="celery", provider=None)],
                               run_dir=str(tmp_path / "runinfo"), **options))
    run_file, run_id = os.path.join(dfk.run_dir, "worker.json"), dfk.run_id
    dfk.cleanup()
    celeriac.clear()
    return run_file, run_id


@pytest.mark.timeout(120)
def test_a_worker_started_after_its_run_ended_exits_at_once_saying_so(tmp_path):
    run_file, run_id = run_and_clean_up(tmp_path)   # its embedded broker is gone
    code, lines = finish(start_worker(run_file))
    assert code == 0
    assert len(lines) == 1, lines
    assert f"run {run_id} has ended" in lines[0] and "start workers for a run while" in lines[0]


def wait_connected(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(w.ready for w in live_workers(client)):
            time.sleep(0.2)
        assert any(w.ready for w in live_workers(client)), "the worker never connected"
    finally:
        client.close()


@pytest.mark.timeout(180)
def test_a_worker_started_by_hand_leaves_when_its_run_ends(tmp_path):
    celeriac.clear()
    dfk = celeriac.load(Config([CeleryExecutor(label="celery", provider=None)],
                               run_dir=str(tmp_path / "runinfo")))
    run_file, run_id = os.path.join(dfk.run_dir, "worker.json"), dfk.run_id
    worker = start_worker(run_file)
    try:
        wait_connected(RunFile.read(run_file).broker_url)
    finally:
        dfk.cleanup()   # its embedded broker stops too
        celeriac.clear()
    code, lines = finish(worker)
    assert code == 0
    assert len([line for line in lines if f"run {run_id} has ended" in line]) == 1, lines
    assert not [line for line in lines if "refused" in line or "failed" in line], lines


@pytest.mark.timeout(180)
def test_on_a_shared_broker_workers_leave_when_the_run_ends_and_later_ones_at_once(tmp_path):
    broker = EmbeddedRedis(str(tmp_path / "broker")).start()
    try:
        celeriac.clear()
        dfk = celeriac.load(Config([CeleryExecutor(label="celery", provider=None)],
                                   run_dir=str(tmp_path / "runinfo"), broker=broker.url))
        run_file, run_id = os.path.join(dfk.run_dir, "worker.json"), dfk.run_id
        shared = os.path.join(str(tmp_path), "shared.json")  # a copy, as on another node:
        RunFile.read(run_file).write(shared)                 # it never learns of the end
        running = start_worker(shared)
        try:
            wait_connected(broker.url)
        finally:
            dfk.cleanup()
            celeriac.clear()
        code, lines = finish(running)   # heard it from the broker's signed marker
        ended = [line for line in lines if f"run {run_id} has ended" in line]
        assert code == 0 and len(ended) == 1, lines
        assert not [line for line in lines if "Connection refused" in line or "Traceback" in line]

        code, lines = finish(start_worker(shared))
        assert code == 0 and len(lines) == 1 and f"run {run_id} has ended" in lines[0], lines
    finally:
        broker.stop()


@pytest.mark.timeout(120)
def test_a_worker_whose_broker_is_gone_without_word_exits_in_seconds(tmp_path):
    broker = EmbeddedRedis(str(tmp_path / "broker")).start()
    url = broker.url
    broker.stop()  # as when an orchestrator is killed: nobody marked the run ended
    run_file = str(tmp_path / "worker.json")
    RunFile(broker_url=url, key="k" * 64, run_id="gone1234").write(run_file)
    code, lines = finish(start_worker(run_file))
    assert code == 1
    assert len(lines) == 1, lines
    assert "cannot reach the broker" in lines[0] and "run gone1234" in lines[0]
    password = url.split("://:", 1)[1].split("@", 1)[0]
    assert password not in lines[0]
