"""Transport: what a run's orchestrator needs from its broker, one implementation per kind.

A transport is made for one run (its broker URL and run id) by the run's link
(``celeriac.orchestrator.link``), which owns the threads; every method is called from one of
them and may block for a round trip. A broker that cannot be reached raises one of
:attr:`Transport.errors`; the link retries or gives up, and names the broker in its error.

- **Queues.** :meth:`send` puts task messages (:class:`~celeriac.wire.message.TaskMessage`)
  on executor queues (:func:`~celeriac.wire.keys.queue_name`), where ``celery worker``
  processes consume them with late acks, and with them Celery ``task-sent`` events
  (:mod:`celeriac.wire.events`) while :meth:`event_listeners` says a consumer may listen.
- **Outcomes.** Workers send signed outcome frames (:mod:`celeriac.wire.outcome`) to the run;
  :meth:`receive` hands them over, in the order they came; :meth:`send_and_receive` sends
  first, in the same round trip where it can.
- **The run.** :meth:`register_run` says the run exists (how ``celeriac worker`` finds it and
  checks its key), :meth:`beat_run` keeps it fresh, :meth:`say_ended` tells its workers it
  is over, :meth:`end_run` removes it with its queues, outcomes and revokes.
- **Workers.** :meth:`live_workers` says which workers are alive, with their queue, block
  and slots; :meth:`death_of` how a dead worker under a task ended, if it was recorded.
- **Lost messages.** :meth:`sweeper` finds this run's messages held by workers that died (to
  relaunch) or are stopped (to run elsewhere); :meth:`instance` changes when the broker
  restarts; :meth:`whereabouts` says which messages it still has then, and
  :meth:`take_back` removes one a gone worker had taken, so that one party relaunches it.
- **Revokes.** :meth:`revoke` writes a cancelled task's id, signed, where the run's workers
  read it (:mod:`celeriac.wire.revokes`); :meth:`drop_queued` takes its message off its
  queue if no worker has it yet; :meth:`listen_broadcast` hears Celery's remote-control
  broadcast (Flower's revokes), which the run decides on (``orchestrator.remote_control``).

The run's records (liveness, revokes, the run's end) are read and written through
:attr:`Transport.client`, which answers the few Redis commands they use on either broker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Iterable, Literal, Protocol

from celeriac.wire.alive import LiveWorker
from celeriac.wire.message import TaskMessage


class Sweeper(Protocol):
    """A run's look at its broker's workers, kept between sweeps."""

    def sweep(self, pending) -> list[tuple[str, str]]:
        """``[(message id, why), ...]`` for each of ``pending`` taken back from a dead (or
        too long stopped) worker, to fail with WorkerLost so the DFK relaunches it."""


class Transport(ABC):
    """One run's broker. Subclasses set :attr:`errors` and implement the methods below."""

    #: What the methods raise when the broker cannot be reached (worth retrying).
    errors: tuple[type[BaseException], ...] = ()
    #: The run's id, and its records (a Redis client, or the same commands on the broker).
    run_id: str
    client = None

    @abstractmethod
    def send(self, messages: dict[str, list[TaskMessage]], events=()) -> list:
        """Put each queue's messages on it (one round trip, where the broker allows).

        Args:
            events: :class:`~celeriac.wire.events.SentEvent` s to publish in the same round
                trip, before the messages, as Celery sends them.

        Returns:
            For each event, how many consumers it reached (0: nobody heard it).
        """

    @abstractmethod
    def event_listeners(self) -> Literal["none", "maybe", "some"]:
        """Whether an event consumer (Flower, ``celery events``) hears ``task-sent`` events:
        surely not, perhaps (only a publish can tell: see :meth:`send`'s answer), or surely."""

    @abstractmethod
    def receive(self, limit: int, timeout: float) -> tuple[list[bytes], bool]:
        """Up to ``limit`` outcome frames, waiting up to ``timeout`` seconds if there are none.

        Returns:
            ``(frames, drained)``: drained is True when no frame sent before the call is left.
        """

    def send_and_receive(self, messages: dict[str, list[TaskMessage]], events, limit: int,
                         timeout: float) -> tuple[list, tuple | BaseException]:
        """:meth:`send`, then :meth:`receive`, in one round trip where the broker allows (the
        listener sends the tasks that outcomes made ready, and waits for the next outcomes).

        Returns:
            ``(send's replies, receive's)``: receive's is ``(frames, drained)``, or one of
            :attr:`errors` if it failed once the messages had been sent.

        Raises:
            One of :attr:`errors`: the messages may not have been sent (as :meth:`send`).
        """
        replies = self.send(messages, events)
        try:
            return replies, self.receive(limit, timeout)
        except self.errors as e:
            return replies, e

    @abstractmethod
    def register_run(self, info: dict) -> None:
        """Say the run exists, with ``info`` (JSON: its start time, its key check)."""

    @abstractmethod
    def beat_run(self) -> None:
        """Refresh the run's heartbeat; workers whose run stops beating may leave when idle."""

    def say_ended(self, key: bytes) -> None:
        """Say, signed with the run's ``key``, that the run is over: its workers leave
        (:mod:`celeriac.wire.runend`)."""
        from celeriac.wire import runend
        runend.mark_ended(self.client, key, self.run_id)

    @abstractmethod
    def end_run(self, queues: Iterable[str]) -> None:
        """Remove the run: its record, heartbeat, outcomes, revokes and ``queues``."""

    @abstractmethod
    def live_workers(self) -> list[LiveWorker]:
        """Every worker with a fresh heartbeat, on any queue."""

    @abstractmethod
    def death_of(self, message_id: str) -> str | None:
        """How the worker that died running ``message_id`` ended, if its supervisor said."""

    @abstractmethod
    def sweeper(self, describe: Callable[[str], str]) -> Sweeper:
        """A :class:`Sweeper` for this run (``describe(message id)`` names its app for logs)."""

    @abstractmethod
    def instance(self) -> str | None:
        """The broker's instance id: it changes when the broker restarts (None: unknown)."""

    @abstractmethod
    def whereabouts(self, queues: Iterable[str]) -> tuple[set, dict]:
        """``(found, taken)``: the message ids queued on ``queues`` or held by a live worker,
        and ``{message id: handle}`` of those delivered to a worker not known to hold them."""

    @abstractmethod
    def take_back(self, handle) -> bool:
        """Take a delivered message back from its worker (True for one caller only)."""

    def revoke(self, key: bytes, ids) -> None:
        """Revoke ``ids`` (task or message ids) of the run, signed with its ``key``, where
        its workers read them: one that has not started one skips it, one that runs it is
        stopped."""
        from celeriac.wire import revokes
        revokes.publish(self.client, key, self.run_id, ids)

    def drop_queued(self, queues: Iterable[str], message_id: str) -> bool:
        """Remove message ``message_id`` from whichever of ``queues`` holds it, if no worker
        has taken it (False: not found, or a queued message cannot be picked out on this
        broker; the worker that gets it skips it, since it is revoked)."""
        return False

    @abstractmethod
    def listen_broadcast(self, exchange: str):
        """A listener of Celery's remote-control broadcast on fanout ``exchange``: its
        ``get_message(timeout)`` gives ``{"data": <kombu's Redis envelope, JSON>}`` or None,
        and ``close()`` ends it."""

    def close(self) -> None:
        """Release connections. Idempotent."""


def for_url(url: str, run_id: str) -> Transport:
    """The transport of run ``run_id`` on broker ``url``, by its scheme."""
    from celeriac.wire.worker_side import AMQP_SCHEMES, scheme_of
    if scheme_of(url) in AMQP_SCHEMES:
        from celeriac.wire.amqp_transport import AmqpTransport
        return AmqpTransport(url, run_id)
    from celeriac.wire.redis_transport import RedisTransport
    return RedisTransport(url, run_id)
