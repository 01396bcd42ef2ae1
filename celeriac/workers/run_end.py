"""When a worker's run is over, and when the worker should leave: the run has ended
(:class:`RunEnd`, :func:`run_gone` before starting), or its orchestrator has been gone for
the idle timeout with nothing to run (:class:`OrphanClock`)."""

from __future__ import annotations

import logging
import time

from celeriac.errors import ConfigurationError, hide_password

logger = logging.getLogger(__name__)

BROKER_START_WAIT = 10.0   # a worker whose broker is unreachable this long at start exits


class RunEnd:
    """Says when a worker's run is over: its run file says so, or its signed marker on the
    broker does (see :mod:`celeriac.wire.runend`); ``over()`` gives the one line to log."""

    def __init__(self, client, key: bytes | None, run_id: str, run_file: str | None = None):
        self.client, self.key, self.run_id, self.run_file = client, key, run_id, run_file

    def over(self, ask_broker: bool = True) -> str | None:
        when = None
        if self.run_file:
            from celeriac.wire.runfile import RunFile
            try:
                when = RunFile.read(self.run_file).ended
            except ConfigurationError:
                pass
        if when is None and ask_broker and self.key is not None:
            from celeriac.wire import runend
            try:
                when = runend.ended_at(self.client, self.key, self.run_id)
            except Exception:  # the broker is away: it cannot say
                pass
        if when is None:
            return None
        return (f"run {self.run_id} has ended (its orchestrator cleaned up at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))}): this worker "
                "has nothing to serve and exits; start workers for a run while it is going")


def run_gone(broker_url: str, key: bytes | None, run_id: str,
             run_file: str | None = None) -> int | None:
    """Before starting workers: the exit code if the run is over (0, saying so in one line)
    or its broker cannot be reached for ``BROKER_START_WAIT`` seconds (1); else None."""
    from celeriac.wire import worker_side
    if worker_side.scheme_of(broker_url) in worker_side.AMQP_SCHEMES:
        side = worker_side.for_url(broker_url, run_id)
        client, errors = side.records, side.errors
    else:
        import redis
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=5)
        errors = (redis.exceptions.RedisError,)
    end = RunEnd(client, key, run_id, run_file)
    deadline = time.monotonic() + BROKER_START_WAIT
    try:
        while True:
            why = end.over(ask_broker=False)
            if why is None:
                try:
                    client.ping()
                    why = end.over()
                    if why is None:
                        return None
                except errors as e:
                    if time.monotonic() < deadline:  # an embedded broker may be starting
                        time.sleep(0.05)
                        continue
                    logger.error("cannot reach the broker at %s for %.0fs (%s): if run %s has "
                                 "ended, its broker may have stopped with it; exiting",
                                 hide_password(broker_url), BROKER_START_WAIT, e, run_id)
                    return 1
            logger.warning("%s", why)
            return 0
    finally:
        client.close()


class OrphanClock:
    """Says when a worker has been an orphan (no orchestrator seen, no task running) for
    ``timeout`` seconds running. ``seen()`` says whether the orchestrator is there now."""

    def __init__(self, seen, timeout: float):
        self.seen = seen
        self.timeout = timeout
        self.since = None

    def expired(self, busy: bool, now: float | None = None) -> bool:
        if not self.timeout:
            return False
        now = time.monotonic() if now is None else now
        if busy or self.seen():
            self.since = None
            return False
        self.since = self.since if self.since is not None else now
        return now - self.since >= self.timeout


def orchestrator_seen(client, run_id: str):
    """A ``seen()`` for :class:`OrphanClock`: is the run's heartbeat key on the broker?"""
    from celeriac.wire.keys import orchestrator_key
    key = orchestrator_key(run_id)

    def seen() -> bool:
        try:
            return bool(client.exists(key))
        except Exception:  # an unreachable broker: the orchestrator cannot be reached either
            return False
    return seen
