"""The worker side of the transport seam: how a worker hands in outcomes, per broker kind.

A worker process (and its supervisor) makes one :class:`WorkerSide` for its broker URL with
:func:`for_url`. It hands each signed outcome frame to its run with :meth:`push_outcome`
(the orchestrator's :meth:`~celeriac.wire.base.Transport.receive` gets it), retrying on
:attr:`errors`. The run's records (liveness, held tasks, revokes, the run's end) are read and
written through :attr:`records`: a Redis client, or the same commands on RabbitMQ
(celeriac.wire.amqp_records). A supervisor that autoscales reads what its workers hold with
:meth:`held`; ``celeriac worker`` without a run id asks :meth:`active_runs`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

from celeriac.errors import ConfigurationError
from celeriac.wire.keys import HELD_PREFIX, RUNS_KEY

#: The URL schemes of the brokers celeriac's workers can serve.
REDIS_SCHEMES = ("redis", "rediss")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def scheme_of(url: str) -> str:
    """The scheme of broker ``url`` (``redis``, ``amqp``...), lower case."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


class WorkerSide(ABC):
    """One worker process's way to its run on the broker (created lazily per process:
    prefork children must not share a socket)."""

    #: What :meth:`push_outcome` raises while the broker is away (worth retrying).
    errors: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def push_outcome(self, results_key: str, frame: bytes) -> None:
        """Hand one signed outcome frame to the run whose results go to ``results_key``."""

    def push_outcome_and_ack(self, results_key: str, frame: bytes, delivery_tag: str) -> bool:
        """:meth:`push_outcome`, and in the same round trip take message ``delivery_tag`` off
        the broker's unacked table; False if this broker cannot (acknowledge as usual)."""
        self.push_outcome(results_key, frame)
        return False

    @property
    @abstractmethod
    def records(self):
        """A Redis client for the run's records (liveness, revokes, the run's end)."""

    @abstractmethod
    def held(self, names) -> dict[str, list]:
        """``{worker: ids of the tasks it holds, reserved or running}`` for workers ``names``
        (a worker not heard from holds none)."""

    @abstractmethod
    def active_runs(self) -> list[str]:
        """The ids of the runs whose orchestrators are active on the broker, sorted."""

    def close(self) -> None:
        """Release connections. Idempotent."""


def held_lists(names, values) -> dict[str, list]:
    """``{name: ids}`` from each worker's held value (JSON text; None: nothing)."""
    held = {}
    for name, value in zip(names, values):
        try:
            ids = json.loads(value) if value else []
        except ValueError:
            ids = []
        held[name] = ids if isinstance(ids, list) else []
    return held


class RedisWorkerSide(WorkerSide):
    """Outcomes RPUSHed onto the run's result list; records in the same Redis."""

    def __init__(self, url: str):
        import redis

        from celeriac.wire.redis_transport import redis_client
        self.errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._client = redis_client(url)

    def push_outcome(self, results_key: str, frame: bytes) -> None:
        self._client.rpush(results_key, frame)

    def push_outcome_and_ack(self, results_key: str, frame: bytes, delivery_tag: str) -> bool:
        from celeriac.wire.redis_recovery import UNACKED, UNACKED_INDEX
        self._client.pipeline().rpush(results_key, frame).zrem(UNACKED_INDEX, delivery_tag) \
            .hdel(UNACKED, delivery_tag).execute()
        return True

    @property
    def records(self):
        return self._client

    def held(self, names) -> dict[str, list]:
        names = list(names)
        return held_lists(names, self._client.mget([HELD_PREFIX + n for n in names])
                          if names else [])

    def active_runs(self) -> list[str]:
        return sorted(r.decode() for r in self._client.hkeys(RUNS_KEY))

    def close(self) -> None:
        self._client.close()


def for_url(url: str, run_id: str | None = None) -> WorkerSide:
    """The worker side for broker ``url`` (serving run ``run_id``), by its scheme."""
    scheme = scheme_of(url)
    if scheme in REDIS_SCHEMES:
        return RedisWorkerSide(url)
    if scheme in AMQP_SCHEMES:
        from celeriac.wire.amqp_transport import AmqpWorkerSide
        return AmqpWorkerSide(url, run_id)
    raise ConfigurationError(
        f"broker {scheme or url!r}:// is not one celeriac workers can serve: use a redis:// "
        "(or rediss://) URL, or amqp:// for RabbitMQ")
