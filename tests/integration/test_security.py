"""Only signed payloads run; the broker is private; no secret on a command line."""

import base64
import json
import os
import pickle
import subprocess
import sys

import psutil
import pytest
import redis
from services import start_worker, stop

import celeriac
from celeriac import Config, python_app
from celeriac.errors import UntrustedPayload
from celeriac.executors import CeleryExecutor
from celeriac.wire.keys import queue_name
from celeriac.wire.runfile import RunFile

pytestmark = pytest.mark.integration


@python_app(executors=["byhand"])
def double(x):
    return 2 * x


@pytest.fixture(scope="module")
def dfk(run_dir):
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="local", workers_per_node=1),
                              CeleryExecutor(label="byhand", provider=None)], run_dir=run_dir))
    yield d
    d.cleanup()
    celeriac.clear()


@pytest.fixture
def run_file(dfk):
    return RunFile.read(os.path.join(dfk.run_dir, "worker.json"))


def forged_message(body: bytes, content_type: str, encoding: str, task_id: str,
                   reply_to: str) -> dict:
    """A task message for celeriac.execute that the orchestrator did not sign."""
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": encoding, "content-type": content_type,
        "headers": {"lang": "py", "task": "celeriac.execute", "id": task_id,
                    "shadow": "forged", "retries": 0, "timelimit": [None, None],
                    "root_id": task_id, "parent_id": None, "argsrepr": "()",
                    "kwargsrepr": "{}", "ignore_result": False},
        "properties": {"correlation_id": task_id, "reply_to": reply_to,
                       "delivery_mode": 2, "body_encoding": "base64", "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": "q"},
                       "delivery_tag": task_id},
    }


class WritesFile:
    """Unpickling this would create a file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_embedded_broker_is_loopback_and_needs_the_password(run_file):
    url = run_file.broker_url
    assert "@127.0.0.1:" in url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()
    assert redis.Redis.from_url(url).config_get("bind")["bind"] == "127.0.0.1"


def test_run_file_is_private(dfk):
    assert os.stat(os.path.join(dfk.run_dir, "worker.json")).st_mode & 0o077 == 0


def test_no_secret_on_any_command_line(dfk, run_file):
    password = run_file.broker_url.split(":")[2].split("@")[0]
    cmdlines = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
    assert cmdlines, "the local block should be running"
    for cmd in cmdlines:
        assert password not in cmd
        assert run_file.key not in cmd


@pytest.mark.timeout(90)
def test_worker_with_another_key_refuses_and_the_task_fails_clearly(dfk, run_file, tmp_path):
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-run-key")
    worker = start_worker("--executor", "byhand", "--key-file", str(wrong),
                          env={"CELERIAC_BROKER": run_file.broker_url}, capture=True)
    try:
        with pytest.raises(UntrustedPayload, match="refused the task") as info:
            double(1).result(timeout=60)
        assert "its key is not this run's" in str(info.value)
        assert "Workers must be started with this run's key" in str(info.value)
        assert worker.wait(timeout=30) == 2  # it left rather than take more tasks
    finally:
        stop(worker)
    assert "key given to `celeriac worker` is not run" in worker.stdout.read().decode()


@pytest.mark.timeout(90)
def test_unsigned_message_is_never_unpickled(dfk, run_file, tmp_path):
    evidence = tmp_path / "pwned"
    client = redis.Redis.from_url(run_file.broker_url)
    body = pickle.dumps(("digest", b"", WritesFile(str(evidence))))
    forged = forged_message(b"S" + b"\0" * 32 + body, "application/x-celeriac", "binary",
                            "forged-1", "attacker-list")
    client.lpush(queue_name(run_file.run_id, "byhand"), json.dumps(forged))
    worker = start_worker("--executor", "byhand", "--run-file",
                          os.path.join(dfk.run_dir, "worker.json"), capture=True)
    try:
        assert double(4).result(timeout=60) == 8  # the genuine task after it ran
    finally:
        stop(worker)
    said = worker.stdout.read().decode()
    assert "refused message forged-1: payload signature does not match" in said
    assert client.llen("attacker-list") == 0  # a worker replies to its own run only
    assert not evidence.exists()


@pytest.mark.timeout(90)
def test_worker_started_by_hand_finds_the_only_run_and_joins(dfk, run_file):
    worker = start_worker("--executor", "byhand", env={"CELERIAC_BROKER": run_file.broker_url,
                                                      "CELERIAC_KEY": run_file.key},
                          capture=True)
    try:
        assert [double(i).result(timeout=60) for i in range(3)] == [0, 2, 4]
    finally:
        stop(worker)
    assert worker.returncode == 0 or worker.returncode == -15


def test_worker_without_key_exits_with_an_explanation(run_file):
    proc = subprocess.run([sys.executable, "-m", "celeriac", "worker", "--executor", "byhand"],
                          env=dict(os.environ, CELERIAC_BROKER=run_file.broker_url,
                                   CELERIAC_KEY=""),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no signing key" in proc.stderr


@pytest.mark.timeout(90)
def test_json_task_body_is_refused_too(dfk, run_file, tmp_path):
    """Workers accept JSON for remote control; a JSON task body still never runs."""
    client = redis.Redis.from_url(run_file.broker_url)
    body = json.dumps([["S" + "0" * 40], {}, {}]).encode()
    forged = forged_message(body, "application/json", "utf-8", "forged-json", "attacker-json")
    client.lpush(queue_name(run_file.run_id, "byhand"), json.dumps(forged))
    worker = start_worker("--executor", "byhand", "--run-file",
                          os.path.join(dfk.run_dir, "worker.json"), capture=True)
    try:
        assert double(5).result(timeout=60) == 10
    finally:
        stop(worker)
    assert "refused message forged-json: payload is not signed" in worker.stdout.read().decode()
    assert client.llen("attacker-json") == 0
