"""CeleryExecutor: apps run as Celery tasks on this executor's own queue, served by workers
that its provider starts in blocks (or that users start by hand with ``celeriac worker``)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import threading

from celeriac.errors import ExecutorError, SubmitException
from celeriac.orchestrator.executors.base import Executor
from celeriac.workers.runfile import queue_name

logger = logging.getLogger(__name__)

#: A block whose workers all exit this many times is given up on: its tasks fail.
MAX_BLOCK_FAILURES = 3


class CeleryExecutor(Executor):
    """Run apps on Celery workers.

    Args:
        label: names the executor (and its queue), for ``@python_app(executors=[...])``.
        provider: starts blocks of workers; default ``LocalProvider()`` (one block here).
            ``None`` starts no workers: run ``celeriac worker --run-file ...`` by hand.
        workers_per_node: worker processes per node; default one per core.
        pool: Celery pool of each worker process (``solo`` runs one task at a time with the
            fewest hops; ``prefork``/``threads`` with ``concurrency`` > 1).
        concurrency: pool size per worker process.
        prefetch_multiplier: messages a worker reserves ahead, per pool slot.
        worker_loglevel: log level of the workers' logs under ``<run_dir>/workers``.
    """

    def __init__(self, label: str = "celery", provider="default", workers_per_node=None,
                 pool: str = "solo", concurrency: int = 1, prefetch_multiplier: int = 4,
                 worker_loglevel: str = "WARNING"):
        self.label = label
        if provider == "default":
            from celeriac.providers.local import LocalProvider
            provider = LocalProvider()
        self.provider = provider
        self.workers_per_node = workers_per_node or os.cpu_count() or 1
        self.pool = pool
        self.concurrency = concurrency
        self.prefetch_multiplier = prefetch_multiplier
        self.worker_loglevel = worker_loglevel
        self.blocks: dict[str, str] = {}      # block number -> job id
        self._failed_blocks = 0
        self._broken = None                   # set once its blocks have failed for good
        self._link = None
        self._lock = threading.Lock()
        self._shut = False

    def start(self, context) -> None:
        if self._shut:
            self._refuse_restart()
        self._context = context
        self._link = context.celery_link()
        self.queue = queue_name(context.run_id, self.label)
        self._log_dir = os.path.join(context.run_dir, "workers")
        os.makedirs(self._log_dir, exist_ok=True)
        if self.provider is not None:
            self.provider.script_dir = os.path.join(context.run_dir, "submit_scripts")
            for _ in range(self.provider.init_blocks):
                self.scale_out()
            self._link.add_health_check(self._check_blocks)

    def worker_command(self, block: str) -> str:
        """The command a block runs (no secrets: they are in the 0600 run file)."""
        log = os.path.join(self._log_dir, f"{self.label}-block{block}.log")
        return " ".join(shlex.quote(a) for a in [
            "env", f"PYTHONPATH={_import_path()}", sys.executable, "-m", "celeriac", "worker",
            "--run-file", self._context.run_file,
            "--executor", self.label, "--processes", str(self.workers_per_node),
            "--pool", self.pool, "--concurrency", str(self.concurrency),
            "--loglevel", self.worker_loglevel, "--logfile", log, "--die-with-parent"])

    def scale_out(self, blocks: int = 1) -> list:
        """Ask the provider for more blocks; returns their job ids."""
        started = []
        for _ in range(blocks):
            with self._lock:
                block = str(len(self.blocks))
            job_id = self.provider.submit(self.worker_command(block), 1,
                                          job_name=f"celeriac.{self.label}.block{block}")
            with self._lock:
                self.blocks[block] = job_id
            started.append(job_id)
        return started

    def submit(self, func, call, resource_specification: dict):
        if self._shut:
            raise SubmitException(f"executor {self.label!r} has been shut down")
        if self._broken is not None:
            raise self._broken
        return self._link.submit(self.queue, func, call)

    def _check_blocks(self) -> None:
        """Fail this executor's tasks, quoting the workers' log, when its blocks keep dying
        (instead of leaving them queued for workers that will never come)."""
        if self._shut or not self.blocks:
            return
        with self._lock:
            jobs = list(self.blocks.items())
        statuses = self.provider.status([job for _b, job in jobs])
        if not all(s.terminal for s in statuses):
            return
        self._failed_blocks += 1
        block = jobs[-1][0]
        log = os.path.join(self._log_dir, f"{self.label}-block{block}.log")
        detail = _tail(statuses[-1].stderr_path) or _tail(log) or "(no output)"
        if self._failed_blocks >= MAX_BLOCK_FAILURES:
            self._broken = ExecutorError(self.label, (
                f"its workers exited {self._failed_blocks} times (last exit code "
                f"{statuses[-1].exit_code}); the tasks sent to it cannot run. Their last "
                f"output:\n{detail}"))
            self._link.fail_all(self._broken, queue=self.queue)
            return
        logger.warning("executor %s: all blocks ended (%s); starting another", self.label,
                       detail.strip().splitlines()[-1:] or "")
        self.scale_out()

    def shutdown(self) -> None:
        with self._lock:
            if self._shut:
                return
            self._shut = True
        if self.provider is not None and self.blocks:
            self.provider.cancel(list(self.blocks.values()))


def _import_path() -> str:
    """The orchestrator's import path, so workers import the same modules (a helper module
    beside the script, a test directory) that the functions sent to them refer to."""
    paths = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    paths += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return os.pathsep.join(dict.fromkeys(p for p in paths if p and os.path.isdir(p)))


def _tail(path, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""
