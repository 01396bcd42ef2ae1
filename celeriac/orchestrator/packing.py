"""Which calls share a task message: a short app's calls are packed by their measured run
time (:func:`pack_size`), and a new app's first burst waits a moment for that run time
(:class:`FirstBurst`). Pure decisions, no I/O; the link's sender thread applies them."""

from __future__ import annotations

PACK_MAX = 64                # calls in one message, at most
PACK_SECONDS = 0.02          # work in one packed message, at most (by measured run times)
PROBE_CALLS = 8              # calls of a new app sent one per message to learn its run time
PROBE_HOLD = 0.25            # seconds its other calls wait for that run time, at most


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


class FirstBurst:
    """The first burst of an app whose run time is not known yet: a few calls are sent one
    per message (probes), the others held until a probe's run time comes back, so they can
    be packed (:func:`pack_size`). Pure bookkeeping, no I/O.

    Without this a new app's first burst went out one call per message, about ten times
    slower than once packed. An app whose probes take longer than ``PROBE_HOLD`` to come
    back is slow enough never to be packed: its held calls then go, one per message.
    """

    def __init__(self, probes: int = PROBE_CALLS, hold: float = PROBE_HOLD):
        self.probes, self.hold = probes, hold
        self._probing: dict[str, list] = {}  # app name -> [first probe sent at, probes sent]

    def send_now(self, name: str, count: int, runtime: float | None, now: float) -> int:
        """How many of ``count`` calls of app ``name`` to send now (the rest wait)."""
        if runtime is not None:
            self._probing.pop(name, None)
            return count
        probe = self._probing.setdefault(name, [now, 0])
        if now - probe[0] >= self.hold:
            return count
        sent = min(count, self.probes - probe[1]) if probe[1] < self.probes else 0
        probe[1] += sent
        return sent
