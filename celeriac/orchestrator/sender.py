"""The sending half of :class:`~celeriac.orchestrator.link.CeleryLink`: building task
messages and getting them to the broker.

``submit`` signs the call and builds its task message in the caller's thread; one sender
thread sends whatever has queued up in a single round trip, instead of a kombu producer round
trip per task. Calls of one short app share a message (:func:`pack_sizes`); a new app's first
burst waits a moment for its run time to be known (:class:`FirstBurst`); a chain's steps go in
one message, several short chains to a message (:meth:`Sending._chains`). While an event
consumer (Flower) listens, the same round trip publishes a ``task-sent`` event per message
(celeriac.orchestrator.sent_events).

:class:`Sending` is a part of the link, not an object of its own: its methods use the link's
state (``_pending``, ``_outbox``, ``_held``, ``_runtimes``, ``transport``, ...), made by
``CeleryLink.__init__``.
"""

from __future__ import annotations

import hashlib
import logging
import reprlib
import threading
import time
from collections import defaultdict
from concurrent.futures import Future

from celeriac.errors import MessageTooLarge, SubmitException
from celeriac.orchestrator.futures import LeanFuture
from celeriac.orchestrator.packing import PACK_MAX, pack_sizes
from celeriac.wire import payload
from celeriac.wire.message import TaskMessage

logger = logging.getLogger(__name__)

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel = 2

SEND_BATCH = 1000
SEND_GIVE_UP = 30.0          # seconds of failed sends before tasks fail with SubmitException
HOLD_POLL = 0.005            # how often held calls are looked at again
#: While fewer than this many calls are in flight, and fewer than the workers' slots, the
#: thread that submits a call pauses this long (seconds) so the sender thread sends it at
#: once. Without the pause a burst's submitting thread kept the GIL for Python's switch
#: interval (5 ms) before the sender could send anything, and the workers waited that long.
FIRST_CALLS = 16
FIRST_CALL_PAUSE = 0.0002
GATHER_BACKLOG = 2048        # calls sent and not done from which a few new calls gather...
GATHER_WAIT = 0.05           # ...for up to this long (seconds), to go packed (_gather)
SLOTS_FRESH = 1.0            # seconds the count of slots serving each queue is reused
CHAIN_SECONDS = 0.05         # a chain's steps sent in one message: at most this much work...
CHAIN_MAX = 128              # ...and at most this many steps


class _Outgoing:
    """A call waiting for the sender thread."""

    __slots__ = ("task_id", "queue", "name", "digest", "func_bytes", "call_bytes",
                 "args", "kwargs", "tid", "after")

    def __init__(self, task_id, queue, name, digest, func_bytes, call_bytes, args, kwargs,
                 tid=None, after=None):
        self.task_id, self.queue, self.name = task_id, queue, name
        self.digest, self.func_bytes, self.call_bytes = digest, func_bytes, call_bytes
        self.args, self.kwargs = args, kwargs  # shown (shortened) if it goes alone
        self.tid, self.after = tid, after  # a chain's step: the tid of the step before


class _TaskFuture(LeanFuture):
    """The future of one call sent by a link: ``cancel()`` revokes the call."""

    def __init__(self, link: "Sending", task_id: str):
        super().__init__()
        self._link = link
        self._task_id = task_id

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        self._link.revoke(self._task_id, "cancelled in the orchestrator")
        return self.cancelled()


class Sending:
    """Sending calls to executor queues (a part of CeleryLink; see the module's docstring)."""

    def submit(self, queue: str, func, call) -> Future:
        """Queue one call for ``queue``; the future resolves when its result arrives.

        Raises:
            SerializationError: the function or an argument cannot be pickled.
            SubmitException: the link is closed.
        """
        fut, item = self._outgoing(queue, func, call)
        self._queue_items([item])
        return fut

    def submit_chain(self, queue: str, steps: list) -> list:
        """Queue ``steps`` (``[(function, call)]``) for ``queue`` in one message, each taking
        the result of the step before (``call.after``); returns their futures."""
        made = []
        try:
            for func, call in steps:
                made.append(self._outgoing(queue, func, call))
        except BaseException:  # none of them goes (a step's argument would not pickle)
            for _fut, item in made:
                self._take(item.task_id)
            raise
        self._queue_items([item for _fut, item in made])
        return [fut for fut, _item in made]

    def chain_limit(self, app_name: str) -> int:
        """How many calls of app ``app_name`` a message may carry as a chain's steps: up to
        ``CHAIN_SECONDS`` of work (``CHAIN_MAX`` at most), from its mean run time so far
        (0 until it has one: a step then waits for the one before, here)."""
        runtime = self._runtimes.get(app_name)
        if runtime is None:
            return 0
        return max(1, min(CHAIN_MAX, int(CHAIN_SECONDS / max(runtime, 1e-6))))

    def _outgoing(self, queue: str, func, call):
        if self._closed:
            raise SubmitException("the run's broker link is closed")
        digest, func_bytes = self._function(func, call.name)
        call_bytes = self.big.dumps_call(func, call, queue, f"arguments of {call.name}")
        fut = _TaskFuture(self, call.task_id)
        self._pending[call.task_id] = (fut, queue, call.name)
        self._queues.add(queue)
        return fut, _Outgoing(call.task_id, queue, call.name, digest, func_bytes, call_bytes,
                              call.args, call.kwargs, call.tid, call.after)

    def _queue_items(self, items: list) -> None:
        if threading.current_thread() is self._listener_thread:
            # Launched because a result arrived (a dependent became ready): the listener
            # sends it itself after this batch of results, in the round trip that waits for
            # the next ones, sparing a thread hand-off and a round trip.
            self._listener_out.extend(items)
        else:
            before = len(self._pending) - len(items)  # calls sent or queued before these
            self._outbox.extend(items)  # one call: a chain's steps are never split
            self._wake.set()
            if before < FIRST_CALLS and before < self._slots(items[0].queue, ready=True):
                time.sleep(FIRST_CALL_PAUSE)  # a worker is idle: let the sender send now

    def _message(self, queue: str, items: list, sent: list | None = None) -> TaskMessage:
        """One task message carrying ``items`` (calls of one app); with ``sent``, what its
        ``task-sent`` event needs is appended to it."""
        first = items[0]
        if len(items) == 1:
            celery_id = first.task_id
            argsrepr, kwargsrepr = _short.repr(first.args), _short.repr(first.kwargs)
        else:
            celery_id = f"{self.run_id}.b{next(self._batch_ids)}"
            self._batches[celery_id] = [i.task_id for i in items]
            argsrepr, kwargsrepr = f"[{len(items)} calls]", "{}"
        if sent is not None:
            sent.append((celery_id, first.name, argsrepr, kwargsrepr, queue, first.task_id))
        calls = [(i.task_id, i.call_bytes) if i.digest == first.digest else  # a chain's step
                 (i.task_id, i.call_bytes, i.digest, i.func_bytes) for i in items]  # of another app
        frame = payload.sign(self.key, payload.dumps((first.digest, first.func_bytes, calls)))
        return TaskMessage(celery_id, first.name, frame, self.results_key, self._origin,
                           argsrepr, kwargsrepr)

    def _function(self, func, name: str):
        entry = self._functions.get(func)
        if entry is None:
            data = payload.dumps(func, f"function of app {name}")
            entry = (hashlib.blake2b(data, digest_size=16).hexdigest(), data)
            self._functions[func] = entry
        return entry

    def _sender(self) -> None:
        while True:
            self._wake.wait(HOLD_POLL if self._held else None)
            self._wake.clear()
            if self._held:  # sent now if a run time came, or the hold is over; else held
                held = []
                while self._held:
                    held.append(self._held.popleft())
                self._push(held)
            self._gather()
            while self._outbox:
                batch = []  # never ending between a chain's steps
                while self._outbox and (len(batch) < SEND_BATCH or
                                        self._outbox[0].after is not None):
                    batch.append(self._outbox.popleft())
                self._push(batch)
            if self._stop.is_set():
                return

    def _gather(self) -> None:
        """While the workers have plenty to do, let a few new calls wait (up to
        ``GATHER_WAIT``) for more, so that they are packed (:func:`pack_sizes`).

        A long run that submits one call as each result comes in (a bounded window) would
        otherwise send its calls a few at a time as they trickle in, one message per call or
        two, and workers paying a message's cost per call fall further behind: packs shrank
        to about 4 calls and a million-task run fell to a third of its speed for minutes.
        Waiting costs nothing while thousands of sent calls are still to run; a chain's next
        step (sent by the listener) and a small run never wait.
        """
        deadline = None
        while 0 < len(self._outbox) < 4 * PACK_MAX and not self._stop.is_set():
            backlog = self._backlog()
            if any(backlog.get(item.queue, 0) < GATHER_BACKLOG for item in list(self._outbox)):
                return
            now = time.monotonic()
            deadline = deadline or now + GATHER_WAIT
            if now >= deadline:
                return
            self._stop.wait(HOLD_POLL)

    def _backlog(self) -> dict:
        """``{queue: calls sent to it and not done}``, for queues with at least
        ``GATHER_BACKLOG`` of them (the others are left out; with several queues, counted
        at most every ``GATHER_WAIT``)."""
        unsent = len(self._outbox) + len(self._held) + len(self._listener_out)
        if len(self._pending) - unsent < GATHER_BACKLOG:
            return {}
        if len(self._queues) == 1:  # the usual case: no need to look at each call
            return dict.fromkeys(self._queues, len(self._pending) - unsent)
        counted_at, counts = self._backlog_seen
        if time.monotonic() - counted_at > GATHER_WAIT:
            counts = defaultdict(int)
            for entry in list(self._pending.values()):
                counts[entry[1]] += 1
            counts = {q: n for q, n in counts.items() if n >= GATHER_BACKLOG}
            self._backlog_seen = (time.monotonic(), counts)
        return counts

    def _push(self, batch) -> None:
        built = self._build(batch)
        if built is not None:
            self._send_built(*built)

    def _build(self, batch):
        """``(calls, {queue: messages}, events)`` to send for ``batch`` (None: nothing to
        send now); the calls count as being sent (``broker_restart.unfinished_messages``) until
        :meth:`_sent` says they went."""
        pending = self._pending
        batch = [item for item in batch if item.task_id in pending]  # not revoked meanwhile
        if not batch:
            return None
        self._pushing[threading.get_ident()] = {item.task_id for item in batch}
        sent = [] if self.sent_events.listening() else None
        by_queue = defaultdict(list)
        backlog = self._backlog()
        groups = defaultdict(list)
        for item in self._chains(batch, by_queue, sent, backlog):
            groups[(item.queue, item.digest)].append(item)
        now = time.monotonic()
        for (queue, _digest), items in list(groups.items()):
            runtime = self._runtimes.get(items[0].name)
            now_sent = self._first_burst.send_now(items[0].name, len(items), runtime, now,
                                                  lambda q=queue: self._slots(q, ready=True) > 0)
            if now_sent < len(items):
                self._held.extend(items[now_sent:])
                items = items[:now_sent]
                if not items:
                    continue
            sizes, k = pack_sizes(len(items), runtime, lambda q=queue: self._slots(q),
                                  max(0, backlog.get(queue, 0) - len(items))), 0
            for size in sizes:
                by_queue[queue].append(self._message(queue, items[k:k + size], sent))
                k += size
            self.stats["messages"] += len(sizes)
            self.stats["calls"] += len(items)
        if not by_queue:
            self._sent()
            return None
        return batch, by_queue, self.sent_events.build(sent) if sent else ()

    def _sent(self) -> None:
        self._pushing.pop(threading.get_ident(), None)

    def _chains(self, items: list, by_queue: dict, sent, backlog: dict) -> list:
        """Put the chains among ``items`` (a step and the steps after it, in order) in
        messages, each whole, several short ones to a message as :func:`pack_sizes` packs
        calls; returns the other items. A step whose step before is not here goes on its
        own: its worker says it did not run it, and it is sent again (kernel)."""
        if all(item.after is None for item in items):
            return items
        units, unit_of = [], {}
        for item in items:
            unit = unit_of.get(item.after) if item.after is not None else None
            if unit is None:
                unit = [item]
                units.append(unit)
            else:
                unit.append(item)
            unit_of[item.tid] = unit
        chains = defaultdict(list)
        for unit in units:
            if len(unit) > 1:
                chains[unit[0].queue].append(unit)
        for queue, units_ in chains.items():
            calls = sum(map(len, units_))
            runtime = sum(self._runtimes.get(i.name, 0.0) for u in units_ for i in u) / calls
            sizes = iter(pack_sizes(calls, runtime, lambda q=queue: self._slots(q),
                                    max(0, backlog.get(queue, 0) - calls)))
            k = 0
            while k < len(units_):
                size, message = next(sizes, 0), list(units_[k])
                k += 1
                while k < len(units_) and len(message) + len(units_[k]) <= size:
                    message += units_[k]
                    k += 1
                by_queue[queue].append(self._message(queue, message, sent))
                self.stats["messages"] += 1
            self.stats["calls"] += calls
        return [unit[0] for unit in units if len(unit) == 1]

    def _send_built(self, batch, by_queue, events) -> None:
        """Send what :meth:`_build` made, retrying for up to ``SEND_GIVE_UP`` seconds."""
        deadline = time.monotonic() + SEND_GIVE_UP
        delay = 0.05
        try:
            while True:
                try:
                    replies = self.transport.send(by_queue, events)
                    if events:
                        self.sent_events.heard(replies)
                    return
                except MessageTooLarge as e:  # none was sent: those fail at once, the rest go
                    for queue, messages in by_queue.items():
                        by_queue[queue] = [m for m in messages if m.id not in e.message_ids]
                    for message_id in e.message_ids:
                        self._complete(message_id, exception=e)
                    events = ()
                except self.transport.errors as e:
                    if time.monotonic() > deadline or self._stop.is_set():
                        error = SubmitException(
                            f"could not send the task to the broker at {self.shown_url} for "
                            f"{SEND_GIVE_UP:.0f}s: {e}. Is the broker running and reachable?")
                        for item in batch:
                            self._complete(item.task_id, exception=error)
                        return
                    logger.warning("sending %d tasks failed (%s); retrying", len(batch), e)
                    events = ()  # only the tasks again: an event could be what the broker refused
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._sent()

    def _slots(self, queue: str, ready: bool = False) -> int:
        """Task slots of the live workers serving ``queue`` (with ``ready``: only of those
        already connected), for packing; asked of the broker at most once every
        ``SLOTS_FRESH`` seconds (a tenth of that while none serves it: workers starting)."""
        seen_at, slots = self._slots_seen
        if time.monotonic() - seen_at > SLOTS_FRESH / (1 if slots.get(queue, (0, 0))[0] else 10):
            try:
                workers = self.transport.live_workers()
            except Exception as e:  # only a packing hint: it must never stop the sending
                logger.debug("could not count the workers serving %s: %s", queue, e)
                self._slots_seen = (time.monotonic(), {})
                return 0
            slots = defaultdict(lambda: [0, 0])
            for worker in workers:
                slots[worker.queue][0] += worker.slots
                slots[worker.queue][1] += worker.slots if worker.ready else 0
            self._slots_seen = (time.monotonic(), dict(slots))
        return slots.get(queue, (0, 0))[1 if ready else 0]
