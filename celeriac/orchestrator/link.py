"""CeleryLink: one run's connection to its broker. One per DFK, shared by its Celery executors.

The broker itself is reached through a transport (celeriac.wire.base); this module decides
what to send and when, and what an outcome or a loss means for the run's futures.

- Sending (:mod:`celeriac.orchestrator.sender`): ``submit`` builds a call's task message in
  the caller's thread, one sender thread sends whatever has queued up in one round trip;
  short calls and a chain's steps share messages.
- Receiving: one listener thread takes the run's outcomes (never one subscription or poll
  per task) and completes the futures. Calls those outcomes made ready (a chain's next step)
  it sends itself, in the round trip that waits for the next outcomes.
- Watching (:mod:`celeriac.orchestrator.watcher`): tasks held by dead or stopped workers are
  relaunched, after a broker restart only those it lost, and the run's heartbeat is kept.
- Revoking (:meth:`CeleryLink.revoke`): a cancelled task's message is dropped from its queue,
  and its id written, signed, where workers read it (:mod:`celeriac.wire.revokes`), so
  one that reserved it skips it and one that runs it is stopped. A revoke sent with Celery's
  remote control (Flower's revoke and terminate, ``celery control revoke``) is heard here on
  the broadcast, even before any worker is up, and ends the task cancelled.
  (Why accepting them is safe: :mod:`celeriac.orchestrator.remote_control`.)
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future

from celeriac.errors import (
    BigValueUnavailable,
    CeleriacError,
    ExecutorError,
    MessageTooLarge,
    RemoteTraceback,
    SerializationError,
    UntrustedPayload,
    WorkerLost,
    hide_password,
)
from celeriac.orchestrator import remote_control
from celeriac.orchestrator.packing import FirstBurst
from celeriac.orchestrator.runlog import carry
from celeriac.orchestrator.sender import Sending, _Outgoing, _short
from celeriac.orchestrator.sent_events import SentEvents
from celeriac.orchestrator.watcher import watch
from celeriac.wire import payload
from celeriac.wire.base import for_url as transport_for_url
from celeriac.wire.bigvalues import BigValues
from celeriac.wire.keys import queue_name, results_key
from celeriac.wire.outcome import open_outcomes

logger = logging.getLogger(__name__)

LISTEN_GIVE_UP = 60.0        # seconds without the broker before all tasks fail


def _with_remote_traceback(failure):
    exc = failure.exception
    if failure.traceback and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(failure.traceback)
    return exc


class CeleryLink(Sending):
    """Sends calls to executor queues and completes their futures from the result list.

    Raises:
        ExecutorError: (from the constructor) the broker cannot be reached.
    """

    def __init__(self, broker_url: str, key: bytes, run_id: str):
        self.url = broker_url
        self.shown_url = hide_password(broker_url)  # for messages and logs: no password
        self.key = key
        self.run_id = run_id
        self.results_key = results_key(run_id)
        self._origin = f"{socket.gethostname()}:{run_id}"
        self.transport = transport_for_url(broker_url, run_id)
        self.sent_events = SentEvents(self.transport, self._origin, run_id)
        self.ran_on = None  # (call ids, worker name) -> None: where outcomes came from
        try:
            self._register_run()
        except self.transport.errors as e:
            raise ExecutorError("celery", (
                f"cannot reach the broker at {hide_password(broker_url)}: {e}. "
                "Is it running, and is the URL (and password) right?")) from None
        self._pending: dict[str, tuple[Future, str, str]] = {}   # task id -> (future, queue, app)
        self._batches: dict[str, list] = {}                       # message id -> its task ids
        self._batch_ids = itertools.count()
        self._refusals: dict[str, str] = {}                      # task id -> unsigned notice
        self._runtimes: dict[str, float] = {}                     # app name -> mean run time
        self.stats = {"messages": 0, "calls": 0}
        self._queues: set[str] = set()
        self._last_done: dict[str, float] = {}                    # queue -> last completion
        self._functions: dict = {}
        self.big = BigValues(key, run_id)  # large arguments and results travel as files
        self._outbox: deque = deque()
        self._held: deque = deque()   # calls of new apps waiting for a run time (FirstBurst)
        self._first_burst = FirstBurst()
        self._backlog_seen: tuple = (float("-inf"), {})  # (when, _backlog()) of several queues
        self._slots_seen: tuple = (float("-inf"), {})  # (when, {queue: [slots, ready]})
        self._listener_out: list = []
        self._pushing: dict = {}          # thread id -> the task ids it is sending
        self._revoked: set = set()   # revoked message ids a dead worker may still hold
        self._drained_at = float("-inf")  # when the listener last emptied the results list
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._threads = [threading.Thread(target=carry(t), name=f"celeriac-{t.__name__.strip('_')}",
                                          daemon=True)
                         for t in (self._sender, self._listener, self._watcher,
                                   self._remote_control)]
        self._listener_thread = self._threads[1]
        for t in self._threads:
            t.start()

    # --------------------------------------------------------------- receiving

    def _listener(self) -> None:
        down_since = None
        while not self._stop.is_set():
            built = None
            if self._listener_out:  # ready because outcomes came: sent with the next wait
                batch, self._listener_out = self._listener_out, []
                built = self._build(batch)
                if self._held:
                    self._wake.set()  # the sender looks at held calls again shortly
            try:
                popped_at = time.monotonic()
                if built is None:
                    frames, drained = self.transport.receive(500, 0.2)  # close() joins this
                else:
                    got = self._send_and_receive(*built)
                    if got is None:
                        continue
                    frames, drained = got
                down_since = None
            except self.transport.errors as e:
                if self._stop.is_set():
                    return
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > LISTEN_GIVE_UP:
                    self.fail_all(ExecutorError("celery", (
                        f"lost the broker at {self.shown_url} for "
                        f"{LISTEN_GIVE_UP:.0f}s: {e}")))
                    down_since = None
                logger.warning("result listener cannot reach the broker: %s", e)
                time.sleep(1)
                continue
            for frame in frames:
                self._deliver(frame)
            if drained:  # every frame on the list at popped_at has now been delivered
                self._drained_at = popped_at
        if self._listener_out:  # stopping: whatever became ready still goes
            batch, self._listener_out = self._listener_out, []
            self._push(batch)

    def _send_and_receive(self, batch, by_queue, events):
        """Send what :meth:`_build` made and wait for outcomes, in one round trip; returns
        ``(frames, drained)`` (None: the send failed, and was sent again on its own).

        Raises:
            One of the transport's errors: the receive failed (the messages went)."""
        try:
            replies, got = self.transport.send_and_receive(by_queue, events, 500, 0.2)
        except (MessageTooLarge, *self.transport.errors) as e:
            logger.warning("sending %d tasks failed (%s); retrying", len(batch), e)
            self._send_built(batch, by_queue, events)
            return None
        self._sent()
        if events:
            self.sent_events.heard(replies)
        if isinstance(got, BaseException):
            raise got
        return got

    def _deliver(self, frame: bytes) -> None:
        if payload.is_notice(frame):
            self._noticed(frame)
            return
        try:
            message_id, outcomes, *worker = open_outcomes(self.key, frame)
        except (UntrustedPayload, SerializationError) as e:
            logger.error("dropped a result frame that failed verification: %s", e)
            return
        if worker and self.ran_on is not None:
            self.ran_on([outcome[0] for outcome in outcomes], worker[0])
        members = self._batches.get(message_id)
        if members is not None:  # a packed message: outcomes come as its calls end
            came = {o[0] for o in outcomes}
            left = [m for m in members if m not in came]
            if left:  # if its worker is lost, only these run again
                self._batches[message_id] = left
            else:
                self._batches.pop(message_id, None)
        for task_id, ok, value_bytes, runtime in outcomes:
            try:
                value = self.big.loads(value_bytes)
            except UntrustedPayload as e:  # a big value's file was changed or swapped
                ok, value = False, e
            except SerializationError as e:
                ok, value = False, SerializationError(
                    f"the {'result' if ok else 'exception'} of the task could not be unpickled "
                    f"in the orchestrator: {e}. Is a module the worker used missing here?")
            else:
                if not ok and isinstance(value.exception, BigValueUnavailable) and \
                        self._resend_inline(task_id, value.exception):
                    continue
                if not ok:
                    value = _with_remote_traceback(value)
            if ok:
                self._complete(task_id, result=value, runtime=runtime)
            else:
                self._complete(task_id, exception=value)

    def _resend_inline(self, task_id: str, why: BigValueUnavailable) -> bool:
        """Send call ``task_id`` again with its big values inside the message, since its
        worker could not read their files; later calls to its queue go that way too."""
        entry, sent = self._pending.get(task_id), self.big.calls.get(task_id)
        if entry is None or sent is None:
            return False
        func, call = sent
        logger.warning("%s; sending it and later calls to queue %s through the broker",
                       why, entry[1])
        self.big.inline.add(entry[1])
        self.big.release(task_id)
        digest, func_bytes = self._function(func, call.name)
        self._listener_out.append(_Outgoing(
            task_id, entry[1], call.name, digest, func_bytes,
            payload.dumps(call, f"arguments of {call.name}"), call.args, call.kwargs))
        return True

    def _noticed(self, frame: bytes) -> None:
        """An unsigned notice: logged, never obeyed, since anyone on the broker can push one.

        A worker that holds the wrong key sends one, then leaves holding the task; if the
        lost-worker sweep then takes that task back, the notice says why (see :meth:`_lost`).
        """
        try:
            note = payload.read_notice(frame)
            task_id = note["id"]
            if not isinstance(task_id, str):
                raise TypeError(task_id)
            said = (f"a worker ({_short.repr(note.get('worker'))} on "
                    f"{_short.repr(note.get('host'))}) refused the task: "
                    f"{str(note.get('error'))[:300]}")
        except (ValueError, KeyError, TypeError):
            logger.error("dropped an unsigned notice that is not one: %r", frame[:200])
            return
        logger.error("unsigned notice about task %r: %r (it decides nothing by itself)",
                     task_id, said)
        if task_id in self._pending or task_id in self._batches:
            self._refusals[task_id] = said

    def _lost(self, task_id: str, why: str) -> CeleriacError:
        """The error for a task the lost-worker sweep took back."""
        said = self._refusals.pop(task_id, None)
        if said is not None:
            return UntrustedPayload(
                f"{said}, and left without running it. Workers must be started with this "
                "run's key (celeriac worker --run-file <run_dir>/worker.json, or CELERIAC_KEY)")
        return WorkerLost(self.transport.death_of(task_id) or why)

    def _complete(self, task_id, result=None, exception=None, runtime=None) -> None:
        self._refusals.pop(task_id, None)
        if self.big.calls:
            self.big.release(task_id)
        members = self._batches.pop(task_id, None)
        if members is not None:  # a whole message failed (worker lost, refused): each call
            for member in members:
                self._complete(member, exception=exception)
            return
        entry = self._pending.pop(task_id, None)
        if entry is None:
            logger.debug("outcome for unknown or finished task %s ignored", task_id)
            return
        fut, queue, name = entry
        self._last_done[queue] = time.monotonic()
        if runtime is not None:
            previous = self._runtimes.get(name)
            self._runtimes[name] = runtime if previous is None else 0.8 * previous + 0.2 * runtime
            if previous is None and self._held:
                self._wake.set()  # calls held for this run time can go, packed
        if exception is not None:
            fut.set_exception(exception)
        else:
            fut.set_result(result)

    def fail_all(self, exception: BaseException, queue: str | None = None) -> None:
        """Fail every pending task (of ``queue``, if given)."""
        for task_id, (_fut, q, _name) in list(self._pending.items()):
            if queue is None or q == queue:
                self._complete(task_id, exception=exception)

    def outstanding(self, queue: str) -> int:
        """How many tasks sent to ``queue`` have not finished (queued or running)."""
        return sum(1 for entry in list(self._pending.values()) if entry[1] == queue)

    def last_done(self, queue: str) -> float | None:
        """``time.monotonic()`` when a task of ``queue`` last finished, if one has."""
        return self._last_done.get(queue)

    # --------------------------------------------------------------- revoking

    def revoke(self, task_id: str, why: str) -> bool:
        """End task (or message) ``task_id``: drop its message if it is queued, and have
        workers skip it, or stop it if it runs. Its future ends cancelled.

        Returns:
            False if the task is not one of this run's unfinished tasks.
        """
        members = self._batches.get(task_id)
        if members is not None:  # a whole packed message
            taken = {m: e for m in members if (e := self._take(m)) is not None}
            self._batches.pop(task_id, None)
            ids = [task_id] + list(taken)
        else:
            entry = self._take(task_id)
            if entry is None:
                return False
            taken, ids = {task_id: entry}, [task_id]
        try:
            self.transport.revoke(self.key, ids)
            dropped = self.transport.drop_queued(self._queues, ids[0])
        except self.transport.errors as e:  # workers that get it will run it
            logger.warning("could not revoke task %s on the broker: %s", task_id, e)
            dropped = False
        if not dropped:
            self._revoked.add(ids[0])
        logger.info("revoked %s (%s)%s", task_id, why,
                    ": dropped from its queue" if dropped else "")
        for entry in taken.values():  # once the broker knows: whoever waits sees it done
            Future.cancel(entry[0])  # never _TaskFuture.cancel: that comes back here
        return True

    def _take(self, task_id: str):
        """Take unfinished task ``task_id`` out of the pending table, so no outcome ends it
        (None: there is none)."""
        entry = self._pending.pop(task_id, None)
        if entry is not None:
            self._refusals.pop(task_id, None)
            if self.big.calls:
                self.big.release(task_id)
        return entry

    def _remote_control(self) -> None:
        remote_control.listen(self.transport, self._stop, self.revoke)

    # --------------------------------------------------------------- watching

    def _watcher(self) -> None:
        watch(self)

    def _register_run(self) -> None:
        """Say on the broker that this run is active (how `celeriac worker` finds it)."""
        self.transport.register_run({
            "started": time.time(), "key_check": payload.key_check(self.key, self.run_id)})
        self._beat()

    def _beat(self) -> None:
        """Refresh the run's heartbeat: workers whose run stops beating may leave when idle."""
        try:
            self.transport.beat_run()
        except self.transport.errors as e:
            logger.warning("orchestrator heartbeat failed: %s", e)

    # --------------------------------------------------------------- closing

    def _wait_for_workers(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until no worker started by hand (in no block)
        serves one of this run's queues."""
        prefix = queue_name(self.run_id, "")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
                w.block is None and (w.queue or "").startswith(prefix)
                for w in self.transport.live_workers()):
            time.sleep(0.1)

    def close(self, wait_for_workers: float = 0.0) -> None:
        """Stop the threads, drop the run's queues and results, fail what is pending. Idempotent.

        Args:
            wait_for_workers: wait up to this many seconds for workers started by hand for
                this run to see that it has ended and leave (they would otherwise log
                connection errors once a broker that stops with the run is gone).
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        try:
            self.transport.say_ended(self.key)  # workers leave now
            if wait_for_workers > 0:
                self._wait_for_workers(wait_for_workers)
            self.transport.end_run(self._queues)
        except self.transport.errors:
            pass
        self.fail_all(CeleriacError("the run was shut down before this task finished"))
        self.transport.close()
        self.big.close()
