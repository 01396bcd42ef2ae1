"""``celeriac flower``: Flower on a run's broker, fed every task of the run from its database,
stopping on SIGTERM or Ctrl-C whatever state the broker is in, and when the run ends.

Flower learns of tasks from Celery events, which a Redis broker broadcasts to whoever listens
at that moment: on its own, Flower never sees a task sent before it started, nor one still
waiting for its dependencies, nor the calls that share a packed message. The run database
(:mod:`.monitoring`) has all of them, so every :data:`POLL_SECONDS` this Flower reads the
tasks that are new or changed there and puts them in Flower's state: a task Flower has not
seen arrives as a ``task-sent`` event under its app's name (Celery id
``<run id>.<task id>.<try>``, as the workers' own events use); one waiting for its
dependencies shows as ``WAITING``; one that ended before Flower saw it, with its final state;
and each task's ``parent_id`` is the first task it waited for and its ``root_id`` that one's
root, so Flower's task page links them. The hot path of the run pays nothing for this.

The run has ended when its database records its end, or when its orchestrator's heartbeat on
the broker has been missing (or the broker unreachable) for :data:`GONE_SECONDS`; Flower then
prints one line saying so and exits 0. SIGTERM and SIGINT end the process at once (Flower's
own shutdown waits for threads stuck on a vanished broker).
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import time
from typing import Optional

logger = logging.getLogger(__name__)

__all__ = ["serve", "TaskFeed"]

#: how often (seconds) the database is read and the run's end checked
POLL_SECONDS = 1.0
#: the run counts as ended after its heartbeat has been missing this long (seconds)
GONE_SECONDS = 15.0
#: how often (seconds) the broker is asked for the run's heartbeat
HEARTBEAT_CHECK = 3.0
#: the client name Flower shows for the orchestrator's ``task-sent`` events
CLIENT = "celeriac-orchestrator"

_FINAL_STATE = {"exec_done": "SUCCESS", "memo_done": "SUCCESS", "failed": "FAILURE",
                "dep_fail": "FAILURE"}


class TaskFeed:
    """Reads a run's database and puts its tasks into a Celery events ``State`` (Flower's).

    Args:
        db_path: the run's ``monitoring.sqlite3``.
        run_id: the run's id (the prefix of its tasks' Celery ids).
        state: a ``celery.events.state.State`` (Flower's ``EventsState``).
    """

    def __init__(self, db_path: str, run_id: str, state):
        self.db_path, self.run_id, self.state = db_path, run_id, state
        self._uuid: dict[int, str] = {}       # task id -> Celery id of its last try
        self._links: dict[int, tuple] = {}    # task id -> (parent uuid, root uuid)
        self._seen: dict[int, tuple] = {}     # task id -> (state, tries) at the last poll
        self._max_id = -1
        self._since = 0.0                     # time_finished of rows already read, at least

    def _connect(self) -> Optional[sqlite3.Connection]:
        if not os.path.exists(self.db_path):
            return None
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)

    def poll(self) -> Optional[float]:
        """Read what changed since the last poll into the state; return the run's end time
        when the database records it (else None)."""
        conn = self._connect()
        if conn is None:
            return None
        try:
            rows = conn.execute(
                "SELECT task_id, app, dependencies, time_submitted, time_launched, "
                "time_finished, state, tries, error FROM tasks WHERE task_id > ? "
                "OR time_finished IS NULL OR time_finished >= ? ORDER BY task_id",
                (self._max_id, self._since - 5.0)).fetchall()
            ended = conn.execute("SELECT time_ended FROM run").fetchone()
        except sqlite3.Error as e:  # a database being created: try again next poll
            logger.debug("cannot read %s yet: %s", self.db_path, e)
            return None
        finally:
            conn.close()
        for row in rows:
            self._put(*row)
        return ended[0] if ended else None

    def _put(self, tid, app, deps, submitted, launched, finished, db_state, tries, error):
        seen = (db_state, tries)
        if self._seen.get(tid) == seen and db_state != "launched":
            return  # unchanged since the last poll (a launched task's links may need mending)
        self._seen[tid] = seen
        uuid = f"{self.run_id}.{tid}.{max(tries or 0, 1)}"
        self._uuid[tid] = uuid
        self._max_id = max(self._max_id, tid)
        if finished is not None:
            self._since = max(self._since, finished)
        links = self._links.get(tid)
        if links is None:
            first = next((int(d) for d in (deps or "").split(",") if d), None)
            parent = self._uuid.get(first) if first is not None else None
            root = self._links.get(first, (None, None))[1] if parent else uuid
            links = self._links[tid] = (parent, root or parent)
        parent, root = links
        task = self.state.tasks.get(uuid)
        if task is None:
            now = time.time()
            self.state.event({
                "type": "task-sent", "uuid": uuid, "hostname": CLIENT, "clock": 0,
                "timestamp": launched or submitted or now, "local_received": now,
                "name": app, "args": "", "kwargs": "", "retries": max((tries or 1) - 1, 0),
                "parent_id": parent, "root_id": root})
            task = self.state.tasks.get(uuid)
            if task is None:  # evicted at once (Flower's --max-tasks): nothing to show
                return
        if task.parent_id != parent or task.root_id != root:
            # a worker's task-received carries the message's own ids: the run's are these
            task.parent_id, task.root_id = parent, root
        if parent is not None:
            parent_task = self.state.tasks.get(parent)
            if parent_task is not None:
                parent_task.children.add(task)
        if task.worker is not None and task.state not in ("SENT", "WAITING"):
            return  # the workers' own events tell this task's story
        final = _FINAL_STATE.get(db_state)
        if final is not None:
            task.state = final
            task.timestamp = finished
            if launched is not None:
                task.started = launched
            if final == "SUCCESS":
                task.succeeded = finished
            else:
                task.failed = finished
                if error:
                    task.exception = error.strip().splitlines()[-1]
                    task.traceback = error
        elif db_state == "pending":
            task.state = "WAITING"
        elif task.state == "WAITING":
            task.state = "SENT"


_boards: dict = {}  # (broker, run id) -> the run's records on an AMQP broker, kept open


def _heartbeat_seen(broker: str, run_id: str) -> bool:
    """Whether the run's orchestrator heartbeat is on the broker (False if unreachable)."""
    import redis

    from celeriac.wire.keys import orchestrator_key
    from celeriac.wire.worker_side import AMQP_SCHEMES, scheme_of
    if scheme_of(broker) in AMQP_SCHEMES:  # heard on the board: a first look waits a beat
        from celeriac.wire.amqp_records import Records
        if (broker, run_id) not in _boards:
            _boards[broker, run_id] = Records(broker, run_id)
            time.sleep(2.0)
        return bool(_boards[broker, run_id].exists(orchestrator_key(run_id)))
    try:
        client = redis.Redis.from_url(broker, socket_timeout=3, socket_connect_timeout=3)
        try:
            return bool(client.exists(orchestrator_key(run_id)))
        finally:
            client.close()
    except redis.exceptions.RedisError:
        return False


def _stop_now(signum, _frame) -> None:
    print(f"celeriac flower: stopped ({signal.Signals(signum).name})", file=sys.stderr,
          flush=True)
    os._exit(0)


def serve(broker: str, run_id: Optional[str], run_dir: Optional[str], port: int,
          address: str) -> int:
    """Run Flower until a signal or the run's end (see the module doc). Returns 0."""
    from celery import Celery
    from flower import command
    from flower.app import Flower
    from flower.urls import settings
    from tornado.ioloop import PeriodicCallback
    from tornado.options import options

    signal.signal(signal.SIGTERM, _stop_now)
    signal.signal(signal.SIGINT, _stop_now)
    command.apply_env_options()
    command.apply_options(sys.argv[0], [f"--port={port}", f"--address={address}"])
    command.extract_settings()
    command.setup_logging()
    capp = Celery("celeriac", broker=broker)
    app = Flower(capp=capp, options=options, **settings)
    app.start_http_server()
    feed = TaskFeed(os.path.join(run_dir, "monitoring.sqlite3"), run_id, app.events.state) \
        if run_dir and run_id else None
    missing_since, checked = [None], [float("-inf")]

    def tick() -> None:
        ended = None
        try:
            if feed is not None:
                ended = feed.poll()
        except Exception:  # the feed is a help: Flower's own view goes on without it
            logger.exception("reading the run database failed")
        if ended is None and run_id and time.monotonic() - checked[0] >= HEARTBEAT_CHECK:
            checked[0] = time.monotonic()
            if _heartbeat_seen(broker, run_id):
                missing_since[0] = None
            elif missing_since[0] is None:
                missing_since[0] = time.monotonic()
            elif time.monotonic() - missing_since[0] >= GONE_SECONDS:
                ended = time.time()
        if ended is not None:
            print(f"celeriac flower: run {run_id} ended at "
                  f"{time.strftime('%H:%M:%S', time.localtime(ended))}; stopping",
                  file=sys.stderr, flush=True)
            os._exit(0)

    print(f"celeriac flower: http://{address}:{port} for run {run_id or '(any)'}",
          file=sys.stderr, flush=True)
    PeriodicCallback(tick, POLL_SECONDS * 1000).start()
    app.io_loop.add_callback(tick)
    app.start()
    return 0
