"""A packed message's outcomes handed in as its calls finish, by a thread beside the calls.

Without this a packed message's outcomes all went back with its end (the first up to half a
second late), and when its worker died the whole message ran again, finished calls included.
Now, once a call ends ``HAND_IN_EVERY`` or more after the last hand-in (or the message's
start), the outcomes gathered so far go to the run in one signed frame, the same kind the
message's end sends (celeriac.wire.outcome), so the run completes those futures at once and,
if the worker is lost, relaunches only the calls with no outcome yet. A thread of the worker
process sends them while the next call runs: the calls do not wait for the round trip. The
message is still acknowledged once, at its end, after every outcome handed in early has
reached the broker (:meth:`Outcomes.rest`); the last call's outcome always goes with the end.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time

from celeriac.wire import outcome, worker_side

logger = logging.getLogger(__name__)

#: Seconds of a packed message's calls after which their outcomes are handed in without
#: waiting for its end. Calls shorter than this gather (a message of no-ops goes back in one
#: frame); every call this long or longer is handed in on its own. Each frame wakes the
#: hand-in thread, the broker and the run's listener (about 0.1 ms of CPU in all): handed in
#: after every 50 ms call, the sleep workload lost about 0.3% of its efficiency on the busy
#: 2-core machine (gaps between calls); at most 4 frames a second per worker cost no more
#: wake-ups than the 0.5 s messages did before, and a lost worker's finished calls run again
#: only if they ended in its last quarter of a second.
HAND_IN_EVERY = 0.25
#: Seconds a message's end waits for the thread to hand in its earlier outcomes (a broker
#: that went away: the client retries for up to about 10 s) before sending them itself.
WAIT_FOR_THREAD = 30.0


class _Frame:
    """Outcomes given to the hand-in thread; ``done`` is set once it tried (``ok``: sent)."""

    __slots__ = ("message_id", "outcomes", "worker", "done", "ok")

    def __init__(self, message_id: str, outcomes: list, worker: str):
        self.message_id, self.outcomes, self.worker = message_id, outcomes, worker
        self.done, self.ok = threading.Event(), False


class _HandInThread:
    """The thread of one worker process that hands in early outcomes, on its own connection."""

    def __init__(self, state, url: str):
        self.state, self.url = state, url
        self.frames: queue.SimpleQueue = queue.SimpleQueue()
        self.side = None
        threading.Thread(target=self._run, name="celeriac-hand-in", daemon=True).start()

    def _run(self) -> None:
        while True:
            frame = self.frames.get()
            try:
                if self.side is None:
                    self.side = worker_side.for_url(self.url, self.state.run_id)
                self.side.push_outcome(self.state.results_key, outcome.seal_outcomes(
                    self.state.key, frame.message_id, frame.outcomes, frame.worker))
                frame.ok = True
            except Exception as e:  # they go with the message's end instead, which retries
                logger.info("could not hand in %d outcomes early (%s); they go with the "
                            "message's end", len(frame.outcomes), e)
            finally:
                frame.done.set()


_threads: dict[int, _HandInThread] = {}  # by process id: a forked child makes its own


def _thread(state, url: str) -> _HandInThread:
    found = _threads.get(os.getpid())
    if found is None:
        found = _threads[os.getpid()] = _HandInThread(state, url)
    return found


class Outcomes:
    """The outcomes of one packed message's calls, handed in early as they come (see the
    module's docstring).

    Args:
        state: the worker's ``WorkerState`` (key, run, results list).
        message_id: the packed message's id.
        calls: how many calls it carries (the last one's outcome waits for the end).
        worker: the worker's name (``name@host``), signed with the outcomes.
    """

    def __init__(self, state, message_id: str, calls: int, worker: str | None):
        self.state, self.message_id, self.left = state, message_id, calls
        self.worker = worker or socket.gethostname()
        self.count = self.failed = 0
        self._gathered: list = []
        self._frames: list[_Frame] = []
        self._since = time.perf_counter()

    def add(self, one: tuple) -> None:
        """One call's outcome ``(task id, ok, pickled value, run time)``."""
        self._gathered.append(one)
        self.count += 1
        self.failed += not one[1]
        self.left -= 1
        now = time.perf_counter()
        if self.left > 0 and now - self._since >= HAND_IN_EVERY:
            self._hand_in(self._gathered)
            self._gathered, self._since = [], now

    def rest(self) -> list:
        """The outcomes still to go with the message's end: those not handed in, and those
        the thread could not hand in (or is stuck on: they go twice, the second is ignored).
        Returns once the thread is done with the others, so the message is never
        acknowledged before they reached the broker."""
        back = []
        for frame in self._frames:  # one the thread is still stuck on goes again (a second
            if not frame.done.wait(WAIT_FOR_THREAD) or not frame.ok:  # outcome is ignored)
                back += frame.outcomes
        return back + self._gathered

    def _hand_in(self, outcomes: list) -> None:
        frame = _Frame(self.message_id, outcomes, self.worker)
        self._frames.append(frame)
        _thread(self.state, self.state.broker_url).frames.put(frame)
