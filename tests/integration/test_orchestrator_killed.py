"""An orchestrator killed with SIGKILL takes its local workers and embedded broker with it."""

import subprocess
import sys
import textwrap
import time

import pytest
from services import processes_mentioning

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import celeriac
    from celeriac import Config, python_app

    @python_app
    def double(x):
        return 2 * x

    celeriac.load(Config(run_dir=sys.argv[1]))
    print(double(21).result(timeout=60), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.timeout(90)
def test_sigkill_of_the_orchestrator_leaves_no_worker_or_broker(tmp_path):
    run_dir = str(tmp_path / "runs")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, run_dir], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9 and proc.stdout.strip() == "42", proc.stderr
    deadline = time.monotonic() + 20
    while processes_mentioning(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = processes_mentioning(run_dir)
    for p in leftover:
        p.kill()
    assert not leftover, [p.info["cmdline"] for p in leftover]
