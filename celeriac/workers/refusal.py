"""What a worker does with a task message it cannot verify: a forged one is logged and
dropped without a reply; if its own key is wrong, it says so and leaves holding the message.

Leaving matters: the message stays unacknowledged, so the orchestrator's lost-worker sweep
takes it back, and only then fails the task with the worker's explanation (its unsigned
notice alone decides nothing, since anyone on the broker could push one).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket

from celeriac.wire import payload
from celeriac.wire.keys import RUNS_KEY

logger = logging.getLogger(__name__)


def key_matches_run(client, key: bytes, run_id: str) -> bool | None:
    """Whether ``key`` is run ``run_id``'s key, by the check the run publishes (None: the
    run publishes none, or the broker cannot say)."""
    try:
        record = json.loads(client.hget(RUNS_KEY, run_id) or "{}")
        published = record.get("key_check") if isinstance(record, dict) else None
    except Exception:
        return None
    if not isinstance(published, str):
        return None
    return published == payload.key_check(key, run_id)


def refuse(state, side, message_id: str, worker: str, error: Exception) -> None:
    """Handle a message whose frame did not verify with ``state.key``.

    Returns (the caller raises ``error``, and no reply is sent) when the message was forged;
    does not return when this worker's key is wrong.
    """
    if not state.key_proven and key_matches_run(side.records, state.key, state.run_id) is False:
        logger.error(
            "cannot verify message %s: this worker's signing key is not run %s's key. Leaving "
            "with the message unacknowledged, so the run gets it back and fails the task "
            "with this explanation. Start workers with the run's worker.json (--run-file) or "
            "its CELERIAC_KEY", message_id, state.run_id)
        try:
            side.push_outcome(state.results_key, payload.notice(
                id=message_id, worker=worker, host=socket.gethostname(),
                error=f"{error} (its key is not this run's)"))
        finally:
            _leave(state)
    logger.error("refused message %s: %s. It is not signed with run %s's key, so nothing in "
                 "it was unpickled and no reply is sent", message_id, error, state.run_id)


def _leave(state) -> None:
    """End this worker process now, without acknowledging the message it holds."""
    logging.shutdown()  # flush the log line above
    if state.main_pid is not None and state.main_pid != os.getpid():
        os.kill(state.main_pid, signal.SIGKILL)  # a prefork pool process: end its worker
    os._exit(2)
