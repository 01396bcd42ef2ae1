"""The by-hand flow as a new user meets it: load() prints the run's id and the exact
`celeriac worker` command, and that command, run as printed, serves the run."""

import os
import shlex
import subprocess
import sys

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


@python_app
def double(x):
    return 2 * x


@pytest.mark.timeout(120)
def test_load_prints_the_run_id_and_a_worker_command_that_serves_the_run(tmp_path, capfd,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative run_dir: the printed path works from anywhere
    ex = CeleryExecutor(label="byhand", provider=None)
    with celeriac.load(Config([ex], run_dir="runs", strategy_period=0.5)) as dfk:
        err = capfd.readouterr().err
        assert f"run {dfk.run_id}: executor 'byhand' has no provider" in err
        [command] = [line.strip() for line in err.splitlines()
                     if line.strip().startswith("celeriac worker ")]
        argv = shlex.split(command)
        assert argv[:2] == ["celeriac", "worker"]
        worker = subprocess.Popen([sys.executable, "-m", "celeriac", *argv[1:],
                                   "--processes", "1"], cwd="/")
        try:
            assert double(21).result(timeout=90) == 42
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert os.path.isabs(argv[argv.index("--run-file") + 1])
