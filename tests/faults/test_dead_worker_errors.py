"""When a worker dies under a task, the error names the worker and how it died: the signal
that killed it (a segfault does not read like kill -9 or the out-of-memory killer) or its
exit code."""

import ctypes
import os
import re
import signal

import pytest
from ledger import Figures, Ledger, mark

import celeriac
from celeriac import Config, python_app
from celeriac.errors import WorkerLost
from celeriac.executors import CeleryExecutor


def _die(ledger_dir, key, how, walltime=None):
    mark(ledger_dir, key)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    elif how == "exit7":
        os._exit(7)
    return 2 * key


die = python_app(_die, executors=["solo"])
die_prefork = python_app(_die, executors=["prefork"])

#: What the error says, for each way to die.
SAYS = {
    "sigkill": "killed by signal 9 (SIGKILL)",
    "segfault": "killed by signal 11 (SIGSEGV)",
    "exit7": "exited with code 7",
}


@pytest.fixture(scope="module")
def dfk(tmp_path_factory):
    celeriac.clear()
    d = celeriac.load(Config([
        CeleryExecutor(label="solo", workers_per_node=1),
        CeleryExecutor(label="prefork", workers_per_node=1, pool="prefork", concurrency=1),
    ], run_dir=str(tmp_path_factory.mktemp("runinfo")), worker_lost_retries=0))
    yield d
    d.cleanup()
    celeriac.clear()


@pytest.mark.timeout(240)
def test_the_error_names_the_worker_and_how_it_died(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    futs = {}
    for key, how in enumerate(SAYS):  # one at a time: the one worker runs each
        futs[key] = die(ledger.dir, key, how)
        futs[key].exception(timeout=60)
    futs[9] = die(ledger.dir, 9, "live")  # the restarted worker runs the next task
    figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=60)
    assert figures == Figures(submitted=4, correct=1, lost=3, ran_twice=0, hung=0)
    for key, how in enumerate(SAYS):
        error = futs[key].exception()
        assert isinstance(error, WorkerLost)
        assert re.search(r"worker celeriac-solo-b0-\d+-0\.\d+@\S+ died while running it",
                         str(error)), str(error)
        assert SAYS[how] in str(error)
    assert "out-of-memory" in str(futs[0].exception())   # SIGKILL: what may have sent it
    assert "crash" in str(futs[1].exception())           # SIGSEGV


@pytest.mark.timeout(120)
def test_a_prefork_pool_process_killed_names_its_worker(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    futs = {0: die_prefork(ledger.dir, 0, "sigkill")}
    figures = ledger.figures(futs, {0: 0}, timeout=60)
    assert figures == Figures(submitted=1, correct=0, lost=1, ran_twice=0, hung=0)
    error = str(futs[0].exception())
    assert re.search(r"worker celeriac-prefork-b0-\d+-0\.\d+@\S+", error), error
    assert "signal 9 (SIGKILL)" in error


@pytest.mark.timeout(120)
def test_walltime_child_that_dies_says_how(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    futs = {k: die(ledger.dir, k, how, walltime=30) for k, how in enumerate(SAYS)}
    figures = ledger.figures(futs, {k: 2 * k for k in futs}, timeout=60)
    assert figures == Figures(submitted=3, correct=0, lost=3, ran_twice=0, hung=0)
    for key, how in enumerate(SAYS):
        assert SAYS[how] in str(futs[key].exception())
