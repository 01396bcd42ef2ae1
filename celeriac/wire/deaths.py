"""How a worker process ended: its supervisor records it for each task it was running, so
the error of a task lost with it names the worker and the signal or exit code."""

from __future__ import annotations

import json
import logging
import signal

logger = logging.getLogger(__name__)

DIED_PREFIX = "celeriac:died:"
KEEP = 3600  # seconds: long enough for any run to notice the death

#: What usually sends a signal that kills a worker, to say alongside it.
_CAUSES = {
    signal.SIGKILL: "sent by kill -9 or by the kernel's out-of-memory killer",
    signal.SIGSEGV: "a crash in C code (segmentation fault)",
    signal.SIGBUS: "a crash in C code (bus error)",
    signal.SIGABRT: "an abort, often a failed assertion in C code",
    signal.SIGFPE: "a crash in C code (arithmetic error)",
    signal.SIGILL: "a crash in C code (illegal instruction)",
    signal.SIGTERM: "asked to stop (by kill, or by the batch system at the block's walltime)",
}


def describe(returncode: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    cause = _CAUSES.get(signal.Signals(number))
    return f"killed by signal {number} ({name}){': ' + cause if cause else ''}"


def record(client, worker: str, returncode: int, task_ids) -> None:
    """Note on the broker that ``worker`` ended with ``returncode`` running ``task_ids``."""
    task_ids = list(task_ids)
    if not task_ids:
        return
    value = json.dumps({"worker": worker, "returncode": returncode})
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.set(DIED_PREFIX + task_id, value, ex=KEEP)
        pipe.execute()
    except Exception as e:  # the error will say less, but the task is still taken back
        logger.warning("could not record how worker %s ended: %s", worker, e)


def explain(client, task_id: str) -> str | None:
    """``its worker W died while running it: killed by signal 9 (SIGKILL: ...)``, if the
    worker's supervisor recorded how it ended."""
    try:
        found = json.loads(client.get(DIED_PREFIX + task_id) or "null")
        worker, returncode = found["worker"], int(found["returncode"])
    except Exception:
        return None
    return f"its worker {worker} died while running it: {describe(returncode)}"
