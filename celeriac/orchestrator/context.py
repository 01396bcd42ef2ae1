"""RunContext: what a DFK shares with its executors (run directory, broker, Celery link)."""

from __future__ import annotations

import logging
import os
import secrets
import threading

from celeriac.orchestrator.rundir import make_run_dir
from celeriac.orchestrator.runlog import start_file_logging, stop_file_logging

logger = logging.getLogger(__name__)


def new_run_id() -> str:
    """A fresh run id (names the run's queues and keys on the broker)."""
    return secrets.token_hex(4)


class RunContext:
    """One run's directory and log, and, once a Celery executor asks, its broker and link."""

    def __init__(self, config, run_id: str | None = None):
        self.config = config
        self.run_id = run_id or new_run_id()
        self.run_dir = make_run_dir(config.run_dir)
        self._log_handler = None
        if config.initialize_logging:
            self._log_handler = start_file_logging(os.path.join(self.run_dir, "celeriac.log"),
                                                   self.run_id)
        self._lock = threading.Lock()
        self._broker = None
        self._key = None   # the run's signing key, made with the run file
        self._link = None
        self.run_file = os.path.join(self.run_dir, "worker.json")
        self.monitoring = None  # the run database (set by the DFK when monitoring is on)
        self.tasks = {}  # the DFK's unfinished task records by id: events name their parents

    def launch_broker(self) -> bool:
        """Launch the embedded broker (when no broker is configured) without waiting for it,
        and write the run file: workers may start from here on, while it comes up (they
        take far longer to start than Redis does). Returns whether a broker was launched
        (:meth:`celery_link` then waits for it). Idempotent."""
        with self._lock:
            if self._key is None:
                from celeriac.wire.payload import new_key
                self._key = new_key()
                if self.config.broker is None:
                    from celeriac.orchestrator.broker import EmbeddedRedis
                    self._broker = EmbeddedRedis(os.path.join(self.run_dir, "broker")).launch()
                self._write_run_file()
            return self._broker is not None and self._link is None

    def _write_run_file(self) -> None:
        from celeriac.wire.runfile import RunFile
        url = self.config.broker if self._broker is None else self._broker.url
        RunFile(broker_url=url, key=self._key.decode(), run_id=self.run_id).write(self.run_file)

    def celery_link(self):
        """The run's CeleryLink, starting the embedded broker first if none is configured."""
        self.launch_broker()
        with self._lock:
            if self._link is None:
                from celeriac.orchestrator.link import CeleryLink
                url = self.config.broker
                if self._broker is not None:
                    port = self._broker.port
                    self._broker.wait_ready()
                    if self._broker.port != port:  # its first port was taken meanwhile
                        self._write_run_file()
                    url = self._broker.url
                key = self._key
                self._link = CeleryLink(url, key, self.run_id)
                self._link.sent_events.tasks = self.tasks
                if self.monitoring is not None:  # where each try ran, and the run's workers
                    self._link.ran_on = self.monitoring.ran_on
                    self.monitoring.watch_workers(self._link.transport, self.run_id)
            return self._link

    def close(self) -> None:
        """Stop the link and the embedded broker, and detach the run's log. Idempotent."""
        with self._lock:
            link, self._link = self._link, None
            broker, self._broker = self._broker, None
            wrote_run_file, self._key = self._key is not None, None
        if link is not None:  # by-hand workers leave before a broker that stops with the run
            link.close(wait_for_workers=3.0 if broker is not None else 0.0)
        if broker is not None:
            broker.stop()
        if wrote_run_file:  # a worker started from the run file now exits at once
            from celeriac.wire.runfile import RunFile
            RunFile.mark_ended(self.run_file)
        if self._log_handler is not None:
            stop_file_logging(self._log_handler)
            self._log_handler = None
