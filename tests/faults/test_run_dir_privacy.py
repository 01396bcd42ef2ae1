"""Another local user can read nothing of a real Celery run: with the loosest umask, the run
directory, the embedded broker's files, the workers' logs, the submit scripts, the run file,
the bash apps' logs and the checkpoint are all 0700 directories and 0600 files."""

import os

import pytest
from ledger import Figures, Ledger, mark

import celeriac
from celeriac import AUTO_LOGNAME, Config, bash_app, python_app
from celeriac.executors import CeleryExecutor
from celeriac.providers import LocalProvider


@python_app(cache=True)
def square(ledger_dir, key):
    mark(ledger_dir, key)
    return key * key


@bash_app
def shout(ledger_dir, key, stdout=AUTO_LOGNAME, stderr=AUTO_LOGNAME):
    mark(ledger_dir, f"bash{key}")
    return f"echo {key}"


@pytest.mark.timeout(120)
def test_a_celery_run_leaves_nothing_readable_by_other_users(tmp_path):
    from tests.unit.test_private_run_data import modes_under, not_private
    ledger = Ledger(tmp_path)
    old = os.umask(0)
    try:
        config = Config([CeleryExecutor(label="celery", max_workers_per_node=1,
                                        worker_loglevel="info",
                                        provider=LocalProvider(init_blocks=1, max_blocks=1))],
                        run_dir=str(tmp_path / "runinfo"), checkpoint_mode="task_exit")
        with celeriac.load(config) as dfk:
            futures = {k: square(ledger.dir, k) for k in range(4)}
            figures = ledger.figures(futures, {k: k * k for k in futures}, timeout=60)
            assert shout(ledger.dir, 1).result(timeout=60) == 0
            modes = modes_under(dfk.run_dir)  # while the broker and the workers still run
    finally:
        os.umask(old)
    assert figures == Figures(submitted=4, correct=4, lost=0, ran_twice=0, hung=0)
    for path in ("worker.json", "celeriac.log", "broker/redis.conf", "broker/redis.log",
                 "checkpoint/tasks.sqlite3"):
        assert path in modes, sorted(modes)
    assert any(p.startswith("workers/") for p in modes)
    assert any(p.startswith("submit_scripts/") and p.endswith(".sh") for p in modes)
    assert any(p.startswith("task_logs/") and p.endswith(".stdout") for p in modes)
    assert not_private(modes) == {}
