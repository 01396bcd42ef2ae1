"""Helpers for child processes the orchestrator starts (broker, local workers)."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGTERM this process when its parent dies, so a killed orchestrator
    leaves no broker or worker behind (Linux; a no-op elsewhere). Used as a preexec_fn, and
    by workers started from a block script (the setting does not pass through the shell)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)
