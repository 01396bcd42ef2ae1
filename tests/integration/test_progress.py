"""Live progress and the printed end-of-run summary, checked on a real pseudo-terminal; and
their silence when stderr is not a terminal or Config(progress=False)."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import time, celeriac
    from celeriac import Config, python_app
    from celeriac.executors import ThreadPoolExecutor

    @python_app
    def nap(i):
        time.sleep(0.15)
        if i == 0:
            raise ValueError("nap 0 failed")
        return i

    config = Config(executors=[ThreadPoolExecutor(max_threads=2)], exit_mode="wait",
                    progress={progress})
    with celeriac.load(config):
        futures = [nap(i) for i in range(40)]   # about 3 s on 2 threads
        time.sleep(1.5)
    print("script done")
""")


def run(tmp_path, progress=True, terminal=True) -> str:
    """Run the script with stderr on a pseudo-terminal (or a pipe); return what it wrote."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(progress=progress))
    env = dict(os.environ, PYTHONPATH=ROOT)
    if not terminal:
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        proc.wait(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_a_terminal_sees_progress_then_the_summary(tmp_path):
    out = run(tmp_path)
    assert "celeriac:" in out and "task/s" in out          # tqdm's bar, with its rate
    assert "done 39, running 0, waiting 0, failed 1" in out  # its last state
    assert "40/40" in out
    assert "celeriac: 40 tasks in" in out and "exec_done 39, failed 1; 0 retries" in out
    assert "first error of nap: task 0: ValueError: nap 0 failed" in out
    assert "monitoring.sqlite3" in out
    assert out.index("40/40") < out.index("celeriac: 40 tasks in") < out.index("script done")


def test_progress_false_draws_nothing_on_a_terminal(tmp_path):
    out = run(tmp_path, progress=False)
    assert "task/s" not in out and "celeriac: 40 tasks" not in out
    assert "script done" in out


def test_a_pipe_gets_no_progress_and_no_summary(tmp_path):
    out = run(tmp_path, terminal=False)
    assert out.strip() == "script done"
