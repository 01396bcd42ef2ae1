"""Suite-wide guards: no test may leave a process behind."""

import os

import psutil
import pytest


def _children():
    children = psutil.Process(os.getpid()).children(recursive=True)
    return {p.pid: " ".join(p.cmdline()[:6]) for p in children
            if p.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture(autouse=True, scope="module")
def no_leftover_processes():
    """After each test module, every broker and worker it started must be gone."""
    before = set(_children())
    yield
    deadline_left = {}
    for _ in range(50):
        deadline_left = {pid: cmd for pid, cmd in _children().items() if pid not in before}
        if not deadline_left:
            return
        psutil.wait_procs([psutil.Process(p) for p in deadline_left if psutil.pid_exists(p)],
                          timeout=0.2)
    for pid in deadline_left:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    pytest.fail(f"processes left behind: {deadline_left}")
