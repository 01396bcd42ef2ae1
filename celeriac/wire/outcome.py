"""Outcome frames: what a worker sends back for one message, signed with the run's key.

A frame holds ``(message id, [(task id, ok, pickled value, run time or None), ...], worker)``:
one entry per call the message carried, and the worker's name (``name@host``, so the run
database records where each try ran). Each value is pickled on its own, so the orchestrator can
still tell which task an outcome belongs to when one value cannot be unpickled there; ``ok``
False means the value is a :class:`~celeriac.wire.call.Failure`.
"""

from __future__ import annotations

from celeriac.wire import payload


def seal_outcomes(key: bytes, message_id: str, outcomes: list, worker: str) -> bytes:
    """The signed frame of ``outcomes`` of message ``message_id``, run by ``worker``."""
    return payload.seal(key, (message_id, outcomes, worker))


def open_outcomes(key: bytes, frame: bytes) -> tuple:
    """``(message id, outcomes, worker)`` from a frame made by :func:`seal_outcomes` (a
    worker of an older celeriac sends no ``worker``).

    Raises:
        UntrustedPayload: the frame is not signed with ``key``.
        SerializationError: it is signed but cannot be unpickled.
    """
    return payload.unseal(key, frame)
