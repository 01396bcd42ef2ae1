"""A worker killed (kill -9) in the middle of a packed message: the calls that had finished
keep their results (handed in as each ended) and do not run again; only the call that was
running and those not started yet run again, on another worker. On Redis and on RabbitMQ."""

import os
import signal
import time

import pytest
from ledger import Figures, Ledger, mark
from services import rabbitmq  # noqa: F401  (the session's RabbitMQ)

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator import link, packing, sender

pytestmark = pytest.mark.parametrize("broker", ["redis", "amqp"])

CALLS, SECONDS = 20, 0.3  # each call longer than hand_in.HAND_IN_EVERY: handed in alone


@python_app
def packed_double(ledger_dir, key, seconds):
    mark(ledger_dir, key)
    time.sleep(seconds)
    return 2 * key


def _started(ledger) -> dict:
    """``{key: pid of its first run}``."""
    found = {}
    for name in sorted(os.listdir(ledger.dir), key=lambda n: os.stat(
            os.path.join(ledger.dir, n)).st_mtime):
        key, pid = name.split(".")[:2]
        found.setdefault(int(key), int(pid))
    return found


@pytest.mark.timeout(240)
def test_worker_killed_mid_packed_message_reruns_only_unfinished_calls(
        broker, tmp_path, monkeypatch, request):
    # The whole burst goes in one message: held until the hold ends (no probes), then packed.
    monkeypatch.setattr(link, "FirstBurst", lambda: packing.FirstBurst(probes=0))
    monkeypatch.setattr(sender, "pack_sizes", lambda queued, *args, **kwargs: [queued])
    ledger = Ledger(tmp_path)
    url = request.getfixturevalue("rabbitmq") if broker == "amqp" else None
    config = Config([CeleryExecutor(label="w", workers_per_node=2)], broker=url,
                    run_dir=str(tmp_path / "runs"))
    with celeriac.load(config):
        futs = {k: packed_double(ledger.dir, k, SECONDS) for k in range(CALLS)}
        deadline = time.monotonic() + 90
        while len(ledger.runs()) < 8:
            assert time.monotonic() < deadline, "the packed message never ran 8 calls"
            time.sleep(0.02)
        # The finished calls' futures are done while their message still runs.
        assert [futs[k].done() for k in range(6)] == [True] * 6
        time.sleep(SECONDS / 2)  # in the middle of a call
        started = _started(ledger)
        [pid] = set(started.values())  # one message: one worker ran them all
        os.kill(pid, signal.SIGKILL)
        running = max(k for k, p in _started(ledger).items() if p == pid)
        figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=150)
        runs = ledger.runs()
    # Before calls handed in their outcomes as they ended, every call of the message ran
    # again (ran twice 8 here): a finished call's result only went back with the message.
    assert figures == Figures(submitted=CALLS, correct=CALLS, lost=0, ran_twice=1, hung=0)
    assert [k for k in futs if runs[str(k)] > 1] == [running]
    assert running >= 7
    # The finished calls count no lost worker; the others one each (a new try elsewhere).
    assert [futs[k].task_record.lost_count for k in futs] == \
        [0] * running + [1] * (CALLS - running)
