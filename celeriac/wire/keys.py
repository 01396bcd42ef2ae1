"""The names both sides use on the broker: queues, the run's result list, and the run and
worker records (what each record holds: celeriac.workers.liveness, celeriac.wire.alive)."""

from __future__ import annotations


def queue_name(run_id: str, label: str) -> str:
    """The Celery queue of one executor of one run."""
    return f"celeriac.{run_id}.{label}"


def results_key(run_id: str) -> str:
    """The Redis list a run's results are pushed to."""
    return f"celeriac:results:{run_id}"


RUNS_KEY = "celeriac:runs"

WORKERS_KEY = "celeriac:workers"
ALIVE_PREFIX = "celeriac:alive:"
HELD_PREFIX = "celeriac:held:"
RUNNING_PREFIX = "celeriac:running:"
ALIVE_TTL = 5.0  # an alive key not refreshed for this long (seconds) means its worker is gone
ORCHESTRATOR_PREFIX = "celeriac:orchestrator:"
ORCHESTRATOR_TTL = 10.0


def orchestrator_key(run_id: str) -> str:
    """The key a run's orchestrator keeps alive while it runs."""
    return ORCHESTRATOR_PREFIX + run_id
