"""The worker's event loop sends a finished task's acknowledgement before it waits again.

With one message per slot (the RabbitMQ default), the broker delivers a worker's next task
only once the last one is acknowledged; Celery queues that acknowledgement on the loop
(``hub.call_soon``). kombu's reader runs itself again after each delivery and, when the next
message is already there, the solo pool runs it inside that ready callback, so its
acknowledgement is queued by a ready callback. Here the worker's own hub (as ``make_app``'s
worker builds it) meets that situation on a real socket pair standing for the broker
connection: two deliveries waiting, a 60 s timer standing for the worker's heartbeat. The
acknowledgements must both reach the "broker" without anything else waking the loop (it
used to wait for its next timer: each such task left its worker idle up to 2 s while tasks
were queued). The end-to-end case is a race (which ready callback runs first, and whether
RabbitMQ answers within it), so this is where it is pinned down.
"""

from __future__ import annotations

import socket
import threading

import pytest

from celeriac.workers.app import make_app

pytestmark = pytest.mark.timeout(60)

WAKE_AFTER = 10.0  # a loop still waiting this long is woken from outside, and the test fails


def _worker_hub():
    """The hub of a Celery worker made from celeriac's app (nothing connects until start)."""
    app = make_app("amqp://guest:guest@127.0.0.1:9//", prefetch_multiplier=1)
    worker = app.WorkController(pool_cls="solo", concurrency=1, without_gossip=True,
                                without_mingle=True, without_heartbeat=True, quiet=True)
    return worker.hub


def test_the_ack_of_a_task_run_by_a_reread_is_sent_before_the_loop_waits():
    hub = _worker_hub()
    broker, conn = socket.socketpair()
    wake_in, wake_out = socket.socketpair()
    conn.setblocking(False)
    ran, heard = [], []

    def deliver_one():
        """kombu's reader (``Transport._make_reader``): one delivery, then itself again."""
        try:
            tag = conn.recv(1)
        except BlockingIOError:
            return
        ran.append(tag)  # the solo pool runs the task here; Celery then queues its ack:
        hub.call_soon(conn.send, b"ack " + tag)
        hub.call_soon(deliver_one)

    def broker_side():
        """What the broker hears while nothing but the worker's own loop runs it; then it
        wakes the loop (it would otherwise wait for its 60 s timer) so the test ends."""
        broker.settimeout(WAKE_AFTER)
        got = b""
        try:
            while got != b"ack 1ack 2":
                got += broker.recv(100)
        except TimeoutError:
            pass
        heard.append(got)
        wake_in.send(b"w")

    woken = []
    hub.add_reader(conn, deliver_one)
    hub.add_reader(wake_out, lambda: (wake_out.recv(1), woken.append(True)))
    hub.call_later(60, lambda: None)  # the worker's next timer (heartbeats: every 2 s)
    broker.sendall(b"12")  # two tasks delivered: the second is read by the reader's re-run
    listener = threading.Thread(target=broker_side, daemon=True)
    listener.start()
    loop = hub.create_loop()
    try:
        while not woken:
            next(loop)
    finally:
        listener.join(WAKE_AFTER + 5)
        hub.close()
        for s in (broker, conn, wake_in, wake_out):
            s.close()
    assert ran == [b"1", b"2"]
    assert heard == [b"ack 1ack 2"], (
        "the loop waited with the second task's acknowledgement unsent (the broker heard "
        f"{heard}): RabbitMQ would send this worker nothing more until a timer woke it")
