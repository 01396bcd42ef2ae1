"""The task message: the one task name, and the content type of its signed body.

Every app call travels as the registered task ``celeriac.execute`` with ``shadow=<app name>``.
Its body is one signed frame (content type ``application/x-celeriac``), registered here with
kombu as opaque bytes, so that Celery never unpickles anything itself: the task verifies the
frame before anything in it is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass

from kombu.serialization import register

TASK_NAME = "celeriac.execute"
CONTENT_TYPE = "application/x-celeriac"
SERIALIZER = "celeriac"


def _decode(body: bytes):
    # The body is one signed frame; it stays opaque until the task verifies it.
    return (body,), {}, {}


def _encode(obj) -> bytes:
    args, _kwargs, _embed = obj
    return args[0]


register(SERIALIZER, _encode, _decode, content_type=CONTENT_TYPE, content_encoding="binary")


@dataclass
class TaskMessage:
    """One message for the task: a signed frame carrying one call or several of one app.

    ``id`` is the Celery task id (a try's id, or a packed message's own id), ``shadow`` the
    app's name that Flower and logs show, ``reply_to`` the run's result list (informative:
    a worker replies to its own run's list only), ``origin`` the sending host and run.
    """

    id: str
    shadow: str
    frame: bytes
    reply_to: str
    origin: str
    argsrepr: str = ""
    kwargsrepr: str = ""

    def headers(self) -> dict:
        """Celery's protocol-2 headers, as ``celery.app.amqp.as_task_v2`` writes them."""
        return {
            "lang": "py", "task": TASK_NAME, "id": self.id, "shadow": self.shadow,
            "eta": None, "expires": None, "group": None, "group_index": None,
            "retries": 0, "timelimit": [None, None], "root_id": self.id,
            "parent_id": None, "argsrepr": self.argsrepr, "kwargsrepr": self.kwargsrepr,
            "origin": self.origin, "ignore_result": False, "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        }

    def properties(self) -> dict:
        """The message properties every transport carries."""
        return {"correlation_id": self.id, "reply_to": self.reply_to, "delivery_mode": 2,
                "priority": 0}
