"""Which calls share a task message: a short app's calls are packed by their measured run
time (:func:`pack_sizes`), and a new app's first burst waits a moment for that run time
(:class:`FirstBurst`). Pure decisions, no I/O; the link's sender thread applies them."""

from __future__ import annotations

import math
from collections.abc import Callable

PACK_MAX = 64                # calls in one message, at most
PACK_SECONDS = 0.02          # work in one packed message when the workers are not known
PACK_LONG = 2.0              # work in one packed message, at most, when they are (its
                             # calls hand in their outcomes as they end: workers.hand_in)
PACK_CALL_MAX = 0.25         # calls longer than this (seconds) are never packed: too little gain
PROBE_CALLS = 8              # calls of a new app sent one per message to learn its run time
PROBE_HOLD = 0.25            # seconds its other calls wait for that run time, at most ...
UNSERVED_HOLD = 5.0          # ... once a worker serves its queue (and this long before that:
                             # then they go, so a queue nobody serves yet shows them all)


def pack_size(queued: int, runtime: float | None, backlog: int = 0) -> int:
    """How many calls of one app to put in each message, when ``queued`` are ready at once.

    Short calls (by the app's measured mean ``runtime``) share a message, so a worker pays its
    per-message cost once for several calls. A message holds at most ``PACK_SECONDS`` of work
    (so workers stay balanced) and a burst is still spread over at least four messages,
    counting the ``backlog`` of calls sent before it and not done (a burst queued behind
    thousands of calls needs no spreading: every worker has work until it is reached). An
    app with no measured run time yet is never packed.
    """
    if runtime is None or queued + backlog < 8:
        return 1
    return max(1, min(PACK_MAX, int(PACK_SECONDS / max(runtime, 1e-6)),
                      (queued + backlog) // 4, queued))


def pack_sizes(queued: int, runtime: float | None,
               slots: Callable[[], int | None] = lambda: None, backlog: int = 0) -> list[int]:
    """How many calls of one app each message carries, in the order sent, when ``queued``
    calls are ready at once (the sizes add up to ``queued``).

    A worker pays its per-message cost (about a millisecond, more on a busy machine) between
    two messages, but not between two calls of one message. Knowing the ``slots()`` serving
    the queue (None or 0: not known), a burst is split the way guided self-scheduling splits
    a loop: each message takes at most half of what is left divided by the slots, so early
    messages are large (up to ``PACK_LONG`` seconds of work) and the last ones small (down to
    ``PACK_SECONDS`` of work, or one call). Workers take messages in order, so while one runs
    a large message there is always more than as much work left for the others, and they all
    end within about one small message of each other: 200 calls of 50 ms on two workers go
    in about 16 messages, not 200, and neither worker waits at the end. ``slots`` is only
    called when the sizes depend on it. Without it, :func:`pack_size` for every message. The
    ``backlog`` of calls sent before and not done counts as work still left (as there).
    """
    if runtime is None or queued + backlog < 8:
        return [1] * queued
    runtime = max(runtime, 1e-6)
    least = max(1, min(PACK_MAX, int(PACK_SECONDS / runtime)))
    most = max(least, min(PACK_MAX, int(PACK_LONG / runtime))) if runtime <= PACK_CALL_MAX \
        else least
    spread = max(1, (queued + backlog) // 4)  # a burst still goes in at least four messages
    known = slots() if min(most, spread) > least else None  # else: no matter
    if not known or known < 1:
        size = pack_size(queued, runtime, backlog)
        return [size] * (queued // size) + ([queued % size] if queued % size else [])
    sizes, left = [], queued
    while left:
        size = min(left, spread, most, max(least, math.ceil((left + backlog) / (2 * known))))
        sizes.append(size)
        left -= size
    return sizes


class FirstBurst:
    """The first burst of an app whose run time is not known yet: a few calls are sent one
    per message (probes), the others held until a probe's run time comes back, so they can
    be packed (:func:`pack_sizes`). Pure bookkeeping, no I/O.

    Without this a new app's first burst went out one call per message, about ten times
    slower than once packed. An app whose probes take longer than ``PROBE_HOLD`` to come
    back is slow enough never to be packed: its held calls then go, one per message. That
    time counts only once a worker serves the app's queue: while none does (the run has just
    started, its block waits in a batch queue), holding costs nothing, so the burst is not
    sent unpacked merely because the workers were slow to start (for at most
    ``UNSERVED_HOLD`` seconds).
    """

    def __init__(self, probes: int = PROBE_CALLS, hold: float = PROBE_HOLD,
                 unserved: float = UNSERVED_HOLD):
        self.probes, self.hold, self.unserved = probes, hold, unserved
        # app name -> [hold counted from (None: given up), probes sent, first probe sent at]
        self._probing: dict[str, list] = {}

    def send_now(self, name: str, count: int, runtime: float | None, now: float,
                 served: Callable[[], bool] = lambda: True) -> int:
        """How many of ``count`` calls of app ``name`` to send now (the rest wait);
        ``served()`` says whether a worker serves the app's queue (asked only when the
        hold would end)."""
        if runtime is not None:
            self._probing.pop(name, None)
            return count
        probe = self._probing.setdefault(name, [now, 0, now])
        if probe[0] is not None and now - probe[0] >= self.hold:
            if now - probe[2] < self.unserved and not served():
                probe[0] = now  # no worker could run them yet: the hold starts again
            else:
                probe[0] = None
        if probe[0] is None:
            return count
        sent = min(count, self.probes - probe[1]) if probe[1] < self.probes else 0
        probe[1] += sent
        return sent
