"""Signed revokes: how a run tells its workers to skip, or stop, a task it has cancelled.

Workers do not serve Celery's ``revoke`` and ``terminate`` remote-control commands: anyone on
the broker can send those. The orchestrator, which knows its tasks, decides (a user's
``AppFuture.cancel()``, or a revoke it heard on the remote-control broadcast, see
``CeleryLink``) and writes each revoked id into the run's hash ``celeriac:revoked:<run id>``
with an HMAC of the run's key. A worker obeys only entries that verify: it skips a revoked
message it has not started, and its supervisor kills the process running a revoked task. So
a broker client without the key can neither stop a task nor forge any outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

logger = logging.getLogger(__name__)

REVOKED_PREFIX = "celeriac:revoked:"
REVOKED_TTL = 7 * 24 * 3600  # as long as a message may wait unacknowledged (VISIBILITY_TIMEOUT)


def revoked_key(run_id: str) -> str:
    """The hash of a run's revoked task and message ids."""
    return REVOKED_PREFIX + run_id


def signature(key: bytes, run_id: str, task_id: str) -> str:
    """What proves that run ``run_id`` (holder of ``key``) revoked ``task_id``."""
    return hmac.new(key, f"celeriac revoke {run_id} {task_id}".encode(),
                    hashlib.sha256).hexdigest()


def publish(client, key: bytes, run_id: str, task_ids) -> None:
    """Revoke ``task_ids`` (task or message ids) of run ``run_id``: one round trip."""
    name = revoked_key(run_id)
    pipe = client.pipeline(transaction=False)
    pipe.hset(name, mapping={t: signature(key, run_id, t) for t in task_ids})
    pipe.expire(name, REVOKED_TTL)
    pipe.execute()


def fetch(client, key: bytes, run_id: str) -> set:
    """The ids run ``run_id`` has revoked; entries whose signature fails are left out (and
    logged once each), since anyone on the broker can write to the hash."""
    found = set()
    for task_id, sig in (client.hgetall(revoked_key(run_id)) or {}).items():
        task_id, sig = task_id.decode(errors="replace"), sig.decode(errors="replace")
        if hmac.compare_digest(sig, signature(key, run_id, task_id)):
            found.add(task_id)
        elif task_id not in _forged:
            _forged.add(task_id)
            logger.error("ignored a revoke of %r that is not signed with the run's key",
                         task_id[:100])
    return found


_forged: set = set()
