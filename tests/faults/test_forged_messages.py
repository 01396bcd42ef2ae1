"""A broker client without the run's key can neither run Celery's built-in tasks on its
workers, nor resolve or fail a run's futures, nor have a worker reply to a list of its choice.

Every attack here is what such a client can do: a real redis client on the run's real
embedded Redis, pushing JSON messages onto a worker's queue or frames onto the results list.
The genuine task waits on an executor with no workers (so the forgery reaches a worker
first); a worker started by hand then runs it, and the figures show it ran once, correctly.
"""

import base64
import glob
import json
import os
import subprocess
import sys
import time

import pytest
import redis
from ledger import Figures, Ledger, mark

import celeriac
from celeriac import Config, python_app
from celeriac.errors import UntrustedPayload
from celeriac.executors import CeleryExecutor
from celeriac.wire.keys import queue_name, results_key
from celeriac.wire.runfile import RunFile


@python_app(executors=["byhand"])
def triple(ledger_dir, key):
    mark(ledger_dir, key)
    return 3 * key


#: Celery's built-in tasks, with arguments that would make each produce an outcome.
_SIG = {"task": "celery.accumulate", "args": ["forged"], "kwargs": {}, "options": {},
        "subtask_type": None, "immutable": False}
BUILTINS = {
    "celery.accumulate": (["forged"], {}),
    "celery.map": ([_SIG, [["forged"]]], {}),
    "celery.starmap": ([_SIG, [["forged"]]], {}),
    "celery.chunks": ([_SIG, [["forged"]], 1], {}),
    "celery.backend_cleanup": ([], {}),
    "celery.chord_unlock": (["group-id", _SIG], {}),
    "celery.group": ([[_SIG]], {}),
    "celery.chain": ([[_SIG]], {}),
    "celery.chord": ([[_SIG], _SIG], {}),
}


@pytest.fixture(scope="module")
def dfk(tmp_path_factory):
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="local", workers_per_node=1),
                              CeleryExecutor(label="byhand", provider=None)],
                             run_dir=str(tmp_path_factory.mktemp("runinfo"))))
    yield d
    d.cleanup()
    celeriac.clear()


@pytest.fixture
def run(dfk):
    return RunFile.read(os.path.join(dfk.run_dir, "worker.json"))


@pytest.fixture
def client(run):
    c = redis.Redis.from_url(run.broker_url)
    yield c
    c.close()


def _message(name, task_id, args, kwargs, reply_to, queue):
    body = json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None,
                                      "chord": None}]).encode()
    return json.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None,
                    "expires": None, "group": None, "group_index": None, "retries": 0,
                    "timelimit": [None, None], "root_id": task_id, "parent_id": None,
                    "argsrepr": "", "kwargsrepr": "", "origin": "attacker",
                    "ignore_result": False},
        "properties": {"correlation_id": task_id, "reply_to": reply_to, "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": task_id},
    })


def _queued(client, queue, key, timeout=30):
    """The genuine message of ``triple(..., key)`` waiting on ``queue``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in client.lrange(queue, 0, -1):
            if json.loads(message)["headers"]["argsrepr"].endswith(f", {key})"):
                return message
        time.sleep(0.05)
    raise AssertionError(f"triple(..., {key}) was never queued on {queue}")


def _queued_id(client, queue, key):
    return json.loads(_queued(client, queue, key))["headers"]["id"]


def _drained(client, queue, timeout=30):
    """Wait until a worker has taken and finished every message on ``queue``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.llen(queue) == 0 and client.hlen("unacked") == 0:
            time.sleep(1.0)  # anything a worker pushed back has reached the listener
            return
        time.sleep(0.05)
    raise AssertionError(f"{queue} was never drained")


def _worker_log(run_dir) -> str:
    """What the run's workers logged (their log files, and their block's stderr)."""
    text = ""
    for path in glob.glob(os.path.join(run_dir, "workers", "*")) + \
            glob.glob(os.path.join(run_dir, "submit_scripts", "*.stderr")):
        with open(path, errors="replace") as fh:
            text += fh.read()
    return text


def _serve_byhand(dfk):
    """Start a worker by hand for the byhand executor (it runs the genuine task)."""
    return subprocess.Popen([sys.executable, "-m", "celeriac", "worker", "--executor", "byhand",
                             "--run-file", os.path.join(dfk.run_dir, "worker.json")],
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _finish(dfk, ledger, futs):
    worker = _serve_byhand(dfk)
    try:
        return ledger.figures(futs, {k: 3 * k for k in futs}, timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.mark.timeout(180)
def test_celery_builtin_tasks_never_run_nor_resolve_a_future(dfk, run, client, tmp_path):
    ledger = Ledger(tmp_path)
    futs = {7: triple(ledger.dir, 7)}
    task_id = _queued_id(client, queue_name(run.run_id, "byhand"), 7)
    local = queue_name(run.run_id, "local")
    for name, (args, kwargs) in BUILTINS.items():
        client.lpush(local, _message(name, task_id, args, kwargs, results_key(run.run_id),
                                     local))
    _drained(client, local)
    assert not futs[7].done(), f"a forged message decided the task: {futs[7]}"
    log = _worker_log(dfk.run_dir)
    for name in BUILTINS:
        assert f"refused a message for task {name!r}" in log
    assert _finish(dfk, ledger, futs) == Figures(submitted=1, correct=1, lost=0, ran_twice=0,
                                                 hung=0)


@pytest.mark.timeout(180)
def test_unsigned_notice_on_the_results_list_fails_no_task(dfk, run, client, tmp_path, caplog):
    ledger = Ledger(tmp_path)
    futs = {4: triple(ledger.dir, 4)}
    task_id = _queued_id(client, queue_name(run.run_id, "byhand"), 4)
    client.rpush(results_key(run.run_id), b"J" + json.dumps(
        {"id": task_id, "error": "forged refusal", "host": "attacker"}).encode())
    client.rpush(results_key(run.run_id), b"S" + b"\0" * 32 + b"forged result")
    deadline = time.monotonic() + 10
    while client.llen(results_key(run.run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    assert not futs[4].done(), f"an unsigned notice decided the task: {futs[4]}"
    assert "unsigned notice" in caplog.text  # logged, not obeyed
    assert _finish(dfk, ledger, futs) == Figures(submitted=1, correct=1, lost=0, ran_twice=0,
                                                 hung=0)


@pytest.mark.timeout(180)
def test_unsigned_celeriac_task_gets_no_reply_anywhere(dfk, run, client, tmp_path):
    """An unsigned frame under celeriac's own task name, claiming a pending task's id: the
    worker refuses it and says so in its log, but sends nothing a future would obey."""
    ledger = Ledger(tmp_path)
    futs = {5: triple(ledger.dir, 5)}
    task_id = _queued_id(client, queue_name(run.run_id, "byhand"), 5)
    local = queue_name(run.run_id, "local")
    for reply_to in (results_key(run.run_id), "attacker-list"):
        client.lpush(local, _message("celeriac.execute", task_id, ["S" + "0" * 40], {},
                                     reply_to, local))
    _drained(client, local)
    assert not futs[5].done(), f"a refused message decided the task: {futs[5]}"
    assert client.llen("attacker-list") == 0
    assert "not signed" in _worker_log(dfk.run_dir)
    assert _finish(dfk, ledger, futs) == Figures(submitted=1, correct=1, lost=0, ran_twice=0,
                                                 hung=0)


@pytest.mark.timeout(180)
def test_worker_replies_only_to_its_own_runs_results_list(dfk, run, client, tmp_path):
    """A genuine message redirected to another list: it runs once, and its result still
    reaches this run's future (and nothing reaches the attacker's list)."""
    ledger = Ledger(tmp_path)
    futs = {6: triple(ledger.dir, 6)}
    byhand = queue_name(run.run_id, "byhand")
    genuine = _queued(client, byhand, 6)
    assert client.lrem(byhand, 1, genuine) == 1
    message = json.loads(genuine)
    message["properties"]["reply_to"] = "attacker-list"
    local = queue_name(run.run_id, "local")
    message["properties"]["delivery_info"]["routing_key"] = local
    client.lpush(local, json.dumps(message))
    figures = ledger.figures(futs, {6: 18}, timeout=60)
    assert figures == Figures(submitted=1, correct=1, lost=0, ran_twice=0, hung=0)
    assert client.llen("attacker-list") == 0


@pytest.mark.timeout(180)
def test_worker_with_the_wrong_key_fails_the_task_clearly_and_leaves(dfk, run, tmp_path):
    """It cannot sign its refusal, and its unsigned notice alone decides nothing: it leaves
    holding the task, the run takes the task back as from a dead worker, and only then fails
    it, with the notice's explanation."""
    ledger = Ledger(tmp_path)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-run-key")
    futs = {8: triple(ledger.dir, 8)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "worker", "--executor", "byhand", "--key-file",
         str(wrong)], env=dict(os.environ, CELERIAC_BROKER=run.broker_url),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        figures = ledger.figures(futs, {8: 24}, timeout=90)
        assert worker.wait(timeout=30) == 2
    finally:
        worker.kill()
        worker.wait()
    assert figures == Figures(submitted=1, correct=0, lost=1, ran_twice=0, hung=0)
    error = futs[8].exception()
    assert isinstance(error, UntrustedPayload)
    assert "refused the task: payload signature does not match" in str(error)
    assert "its key is not this run's" in str(error)
    assert "is not run" in worker.stderr.read().decode()
    # The next task runs on a worker with the right key.
    futs = {9: triple(ledger.dir, 9)}
    assert _finish(dfk, ledger, futs) == Figures(1, 1, 0, 0, 0)


@pytest.mark.timeout(180)
def test_revoke_broadcast_can_only_cancel(dfk, run, tmp_path):
    """Remote control is open to any broker client: a revoke (Flower's, or anyone's) ends a
    task as cancelled, and that is all it can do: it runs nothing and decides no result."""
    from concurrent.futures import CancelledError

    from celery import Celery
    ledger = Ledger(tmp_path)
    futs = {10: triple(ledger.dir, 10)}
    attacker = Celery(broker=run.broker_url)
    client = redis.Redis.from_url(run.broker_url)
    try:
        byhand = queue_name(run.run_id, "byhand")
        task_id = json.loads(_queued(client, byhand, 10))["headers"]["id"]
        attacker.control.revoke(task_id, terminate=True)
        with pytest.raises(CancelledError):
            futs[10].result(timeout=30)
        assert client.llen(byhand) == 0  # the orchestrator dropped its message
        assert ledger.runs() == {}
    finally:
        attacker.close()
        client.close()


@pytest.mark.timeout(180)
def test_a_revoke_not_signed_with_the_runs_key_is_ignored(dfk, run, client, tmp_path):
    """Workers obey only revokes their run signed: one written by another broker client
    stops nothing."""
    from celeriac.wire.revokes import revoked_key
    ledger = Ledger(tmp_path)
    futs = {11: triple(ledger.dir, 11)}
    task_id = _queued_id(client, queue_name(run.run_id, "byhand"), 11)
    client.hset(revoked_key(run.run_id), task_id, "0" * 64)
    assert _finish(dfk, ledger, futs) == Figures(1, 1, 0, 0, 0)
