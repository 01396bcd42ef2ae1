"""RabbitMQ's limit on a message's size (``max_message_size``, 128 MiB unless configured),
learnt from its refusal, and the error that tells the user what to do about it.

RabbitMQ does not announce the limit; it refuses a larger message by closing the channel
(``PRECONDITION_FAILED - message size N is larger than configured max size M``), which rolls
back the batch's transaction. The transport then knows M, and refuses any message over it
before sending (:func:`check`), so the others of its batch go and nothing is retried.
"""

from __future__ import annotations

import re

from celeriac.errors import MessageTooLarge

__all__ = ["refused_limit", "check", "too_large"]

_REFUSAL = re.compile(r"message size (\d+) is larger than configured max size (\d+)")
_MIB = 1 << 20


def refused_limit(error: BaseException) -> int | None:
    """The limit (bytes) that a broker's refusal of a message names (None: it is no such
    refusal)."""
    found = _REFUSAL.search(str(error))
    return int(found.group(2)) if found else None


def too_large(what: str, size: int, limit: int, message_ids=()) -> MessageTooLarge:
    """The error for ``what`` (a task's message, a result), ``size`` bytes long."""
    return MessageTooLarge(
        f"{what} is {size / _MIB:.1f} MiB, over the broker's limit on a message "
        f"({limit / _MIB:.1f} MiB: RabbitMQ's max_message_size), so the broker refused it. "
        "Raise max_message_size in rabbitmq.conf (at most 536870912, 512 MiB), or run the "
        "workers where they can see the orchestrator's /dev/shm: values of 1 MiB or more "
        "then travel as files there, not through the broker", message_ids)


def check(messages: dict, limit: int | None) -> None:
    """Raise :class:`~celeriac.errors.MessageTooLarge` naming every one of ``messages``
    (``{queue: [TaskMessage, ...]}``) over ``limit`` bytes, if there are any."""
    if limit is None:
        return
    over = [m for batch in messages.values() for m in batch if len(m.frame) > limit]
    if over:
        biggest = max(over, key=lambda m: len(m.frame))
        what = (f"the task message of {biggest.shadow}" if len(over) == 1 else
                f"{len(over)} task messages (the largest of {biggest.shadow})")
        raise too_large(what, len(biggest.frame), limit, [m.id for m in over])
