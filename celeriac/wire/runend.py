"""How a worker learns that its run is over, so it exits at once with one line.

At cleanup the orchestrator says so twice: on the broker, with a marker signed with the
run's key (``celeriac:ended:<run id>``, kept a week), which live workers see within a beat;
and in the run file (``worker.json``'s ``ended``), which a worker started by hand after the
run reads even though the run's embedded broker has stopped. A marker that does not verify
is ignored: a broker client without the key cannot send a run's workers away.
"""

from __future__ import annotations

import hashlib
import hmac
import time

ENDED_PREFIX = "celeriac:ended:"
ENDED_TTL = 7 * 24 * 3600


def ended_key(run_id: str) -> str:
    return ENDED_PREFIX + run_id


def _signature(key: bytes, run_id: str, when: str) -> str:
    return hmac.new(key, f"celeriac run ended {run_id} {when}".encode(),
                    hashlib.sha256).hexdigest()


def mark_ended(client, key: bytes, run_id: str) -> None:
    """Say on the broker that run ``run_id`` is over (its orchestrator, at cleanup)."""
    when = f"{time.time():.0f}"
    client.set(ended_key(run_id), f"{when} {_signature(key, run_id, when)}", ex=ENDED_TTL)


def ended_at(client, key: bytes, run_id: str) -> float | None:
    """When run ``run_id`` ended, by its signed marker on the broker (None: not ended, or
    the marker does not verify)."""
    value = client.get(ended_key(run_id))
    if not value:
        return None
    when, _, sig = value.decode(errors="replace").partition(" ")
    if not hmac.compare_digest(sig, _signature(key, run_id, when)):
        return None
    try:
        return float(when)
    except ValueError:
        return None
