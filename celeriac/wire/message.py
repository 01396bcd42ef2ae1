"""The task message: the one task name, and the content type of its signed body.

Every app call travels as the registered task ``celeriac.execute`` with ``shadow=<app name>``.
Its body is one signed frame (content type ``application/x-celeriac``), registered here with
kombu as opaque bytes, so that Celery never unpickles anything itself: the task verifies the
frame before anything in it is unpickled.
"""

from __future__ import annotations

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
