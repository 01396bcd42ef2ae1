"""Pool control for ``celeriac worker``: Celery's ``pool_grow``, ``pool_shrink`` and
``autoscale`` remote-control commands, and ``--autoscale MAX,MIN``, as worker processes.

Each Celery worker that ``celeriac worker`` supervises runs the solo pool, whose ``TaskPool``
cannot grow. So a worker serves those commands (from Flower's buttons or ``celery control``)
by asking its supervisor, through the pipe it already writes notes to, for more or fewer
sibling processes; :class:`PoolSize` is the supervisor's side: how many processes to run,
from those requests and, when autoscaling, from the tasks queued and held. Each process has
its own alive key with its slots, so the orchestrator's count of capacity follows.

A command sent to every worker (``celery control pool_grow 1`` with no destination) reaches
each process, and each asks its supervisor: the pool grows by one per process, as each
Celery worker's pool would.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from celeriac.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Seconds the queue must want fewer processes before autoscale stops one (Celery's 30).
AUTOSCALE_KEEPALIVE = 30.0


def serve_remote_control(notes) -> None:
    """In a worker process: serve ``pool_grow``, ``pool_shrink`` and ``autoscale`` by asking
    the supervisor (``notes``: the worker's :class:`~celeriac.workers.liveness.RunningNotes`)."""
    from celery.worker.control import control_command, nok, ok

    def forward(request: str, done: str):
        if notes.fd is None:
            return nok("this worker has no `celeriac worker` supervisor to change its pool")
        notes.ask(request)
        return ok(done)

    @control_command(name="pool_grow", args=[("n", int)], signature="[N=1]")
    def pool_grow(state, n=1, **_kwargs):
        """Grow the pool by n worker processes (started by this worker's supervisor)."""
        if not _count_ok(n):
            return nok(f"n must be a whole number >= 1, not {n!r}")
        return forward(f"grow {int(n)}", f"pool will grow by {int(n)} worker processes")

    @control_command(name="pool_shrink", args=[("n", int)], signature="[N=1]")
    def pool_shrink(state, n=1, **_kwargs):
        """Shrink the pool by n worker processes (idle ones first; never below one)."""
        if not _count_ok(n):
            return nok(f"n must be a whole number >= 1, not {n!r}")
        return forward(f"shrink {int(n)}", f"pool will shrink by {int(n)} worker processes")

    @control_command(name="autoscale", args=[("max", int), ("min", int)],
                     signature="[max [min]]")
    def autoscale(state, max=None, min=None, **_kwargs):
        """Autoscale the pool between min and max worker processes, with the queue."""
        try:
            most, least = parse_autoscale(f"{max},{min if min is not None else 1}")
        except ConfigurationError as e:
            return nok(str(e))
        return forward(f"autoscale {most} {least}", f"autoscale now max={most} min={least}")


def _count_ok(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MAX,MIN"`` (or ``"MAX"``, MIN then 1) as ``(max, min)`` worker processes.

    Raises:
        ConfigurationError: not two whole numbers with 1 <= MIN <= MAX.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        most = int(parts[0])
        least = int(parts[1]) if len(parts) > 1 and parts[1] else 1
        if len(parts) > 2:
            raise ValueError
    except ValueError:
        raise ConfigurationError(
            f"--autoscale takes MAX,MIN worker processes (e.g. 8,1), not {text!r}") from None
    if least < 1 or most < least:
        raise ConfigurationError(
            f"--autoscale {text}: needs 1 <= MIN <= MAX (a pool keeps one process to answer "
            "remote control and to count as capacity)")
    return most, least


@dataclass
class PoolSize:
    """The supervisor's side: how many worker processes to run (no I/O).

    Args:
        processes: how many to run now.
        autoscale: ``(max, min)`` to follow the queue, or None for a fixed size.
        keepalive: seconds the queue must want fewer processes before one is stopped.
        limit: never more than this many (one per accelerator), or None.
    """

    processes: int
    autoscale: tuple | None = None
    keepalive: float = AUTOSCALE_KEEPALIVE
    limit: int | None = None
    _wanted_less_since: float | None = None

    def __post_init__(self):
        if self.autoscale is not None:
            self.processes = self.autoscale[1]
        self.processes = self._capped(self.processes)

    def _capped(self, n: int) -> int:
        n = max(1, n)
        return min(n, self.limit) if self.limit else n

    def request(self, text: str) -> None:
        """Apply one request a worker relayed (``grow N``, ``shrink N``, ``autoscale MAX MIN``).

        Under autoscale, grow and shrink move the range so the new size holds."""
        verb, *numbers = text.split()
        try:
            numbers = [int(x) for x in numbers]
            if verb == "grow":
                self.processes = self._capped(self.processes + numbers[0])
            elif verb == "shrink":
                self.processes = self._capped(self.processes - numbers[0])
            elif verb == "autoscale":
                self.autoscale = parse_autoscale(f"{numbers[0]},{numbers[1]}")
                self.processes = self._capped(min(max(self.processes, self.autoscale[1]),
                                                  self.autoscale[0]))
                self._wanted_less_since = None
            else:
                raise ValueError(verb)
        except (ValueError, IndexError, ConfigurationError):
            logger.warning("ignoring a pool request this supervisor does not understand: %r",
                           text)
            return
        if self.autoscale is not None and verb != "autoscale":
            most, least = self.autoscale
            self.autoscale = (max(most, self.processes), min(least, self.processes))
        logger.warning("pool %s: now %d worker processes%s", text, self.processes,
                       f" (autoscale max={self.autoscale[0]} min={self.autoscale[1]})"
                       if self.autoscale else "")

    def follow(self, demand: int, now: float | None = None) -> int:
        """Under autoscale, the size for ``demand`` processes' worth of queued and held
        tasks: up at once, down once the queue has wanted less for ``keepalive`` s."""
        if self.autoscale is None:
            return self.processes
        now = time.monotonic() if now is None else now
        most, least = self.autoscale
        wanted = self._capped(min(max(demand, least), most))
        if wanted > self.processes:
            self.processes, self._wanted_less_since = wanted, None
        elif wanted < self.processes:
            self._wanted_less_since = self._wanted_less_since or now
            if now - self._wanted_less_since >= self.keepalive:
                self.processes, self._wanted_less_since = wanted, None
        else:
            self._wanted_less_since = None
        return self.processes

    def max_slots(self, concurrency: int) -> int | None:
        """Slots the pool may grow to by itself (for the alive keys), None when fixed."""
        return self.autoscale[0] * concurrency if self.autoscale else None


def demand(side, queue: str, names, concurrency: int) -> int:
    """Processes' worth of work for one queue: messages waiting in it plus those the
    ``names`` workers hold (reserved or running), ``concurrency`` per process.

    Args:
        side: the supervisor's :class:`~celeriac.wire.worker_side.WorkerSide`.
    """
    try:
        waiting = side.records.llen(queue)
        held = side.held(names)
    except Exception as e:  # a broker restart: keep the size until it answers
        logger.warning("autoscale cannot read the queue this round: %s", e)
        return 0
    tasks = waiting + sum(len(ids) for ids in held.values())
    return math.ceil(tasks / max(1, concurrency))
