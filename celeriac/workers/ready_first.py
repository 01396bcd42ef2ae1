"""A worker bootstep: the event loop never waits on its sockets while callbacks are ready to run.

Celery's worker acknowledges a finished task (``acks_late``) and flushes its task events
through ``hub.call_soon``: the callback runs at the top of the event loop's next pass. kombu's
hub then computes how long to wait for I/O from its timers alone, not from those ready
callbacks. A callback queued by a callback of the same pass (on the loop's own thread, so no
wake-up is sent) therefore waits for the next timer, up to the worker heartbeat's 2 s.

On RabbitMQ this is what a task hits when kombu's reader, run again right after the previous
acknowledgement, finds the next message already delivered and the solo pool runs it there:
its acknowledgement is queued, the loop blocks, and with one message per slot RabbitMQ sends
no more until the acknowledgement goes. The worker sat idle 0.1-2 s after such tasks (200 x
50 ms on 2 workers ran at 0.17 of ideal, a chain paid tens of ms a hop). Redis workers rarely
hit it (their outcome's round trip acknowledges the message), but the loop is the same.
"""

from __future__ import annotations

from celery import bootsteps

__all__ = ["ReadyFirst", "ready_first"]


def ready_first(hub) -> None:
    """Make ``hub`` poll without waiting while callbacks are ready (idempotent; call it
    before the hub's loop is created: the loop binds ``fire_timers`` when it starts)."""
    if getattr(hub, "_celeriac_ready_first", False):
        return
    fire_timers = hub.fire_timers

    def fire_timers_then_ready(*args, **kwargs):
        timeout = fire_timers(*args, **kwargs)
        return 0 if hub._ready else timeout  # run them now; the timers keep their time

    hub.fire_timers = fire_timers_then_ready
    hub._celeriac_ready_first = True


class ReadyFirst(bootsteps.StartStopStep):
    """Applies :func:`ready_first` to the worker's hub once Celery has made it."""

    requires = ("celery.worker.components:Hub",)

    def include_if(self, w):
        return w.use_eventloop

    def create(self, w):
        if w.hub is not None:
            ready_first(w.hub)
