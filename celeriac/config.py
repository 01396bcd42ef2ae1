"""Config: Parsl's flat options plus celeriac's own (broker, retry_policy, ...)."""

from __future__ import annotations

import os
import re
from typing import Callable, Optional, Sequence

from celeriac.errors import ConfigurationError
from celeriac.option_checks import OptionChecks

__all__ = ["Config"]

_CHECKPOINT_MODES = (None, "task_exit", "periodic", "dfk_exit", "manual")
_EXIT_MODES = ("cleanup", "skip", "wait")
_STRATEGIES = (None, "none", "simple")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class Config:
    """What a workflow runs on and how the orchestrator behaves.

    Args:
        executors: executors to run apps on. None or empty means one ``CeleryExecutor``
            labelled ``celery`` with a ``LocalProvider`` (one worker process per core).
        broker: ``redis://[:password@]host:port/db`` of an existing Redis, or
            ``amqp://user:password@host:port/vhost`` of a RabbitMQ. None starts an
            embedded Redis on loopback with a random password, under the run directory.
        app_cache: allow ``cache=True`` apps to be memoized (False turns memoization off).
        checkpoint_files: checkpoint directories whose results ``cache=True`` apps reuse, e.g.
            ``celeriac.get_all_checkpoints()``.
        checkpoint_mode: when this run's memoized results are written to
            ``<run dir>/checkpoint``: ``task_exit`` (before each task's future resolves),
            ``periodic`` (every ``checkpoint_period``), ``dfk_exit`` (at cleanup), ``manual``
            (``dfk.checkpoint()``), or None (never).
        checkpoint_period: ``"HH:MM:SS"`` for ``periodic`` mode (default 30 minutes).
        retries: Parsl's retry budget per task.
        retry_handler: ``f(exception, task_record) -> float`` cost of one failure.
        retry_policy: a ``tenacity.Retrying(retry=..., wait=..., stop=...)`` (or a dict of
            those arguments) deciding retries instead of ``retries``/``retry_handler``; its
            waits never block the DFK. An app's own ``retry_policy=`` takes precedence.
        worker_lost_retries: how many times a task whose worker died is relaunched without
            spending the retry budget; after that each loss costs at most one retry.
        run_dir: directory holding numbered run directories (``runinfo/000``, ...).
        strategy: block scaling, as in Parsl: ``'simple'`` starts blocks while tasks wait
            and cancels blocks idle for ``max_idletime``; ``'none'`` (or None) keeps
            ``init_blocks`` blocks.
        strategy_period: seconds between two scaling rounds (each also checks that blocks
            start).
        max_idletime: seconds without outstanding tasks before ``simple`` cancels blocks
            (never below the provider's ``min_blocks``).
        exit_mode: what leaving ``with celeriac.load(...)`` does: ``cleanup`` (shut down
            without waiting for tasks), ``wait`` (wait for all tasks, then clean up),
            ``skip`` (do nothing).
        initialize_logging: write the orchestrator log under the run directory.
        internal_tasks_max_threads: threads for join apps and other in-process work.
        std_autopath: ``f(task_record, "stdout" | "stderr") -> path`` choosing where
            ``AUTO_LOGNAME`` streams go (Parsl's); default ``<run dir>/task_logs/...``.
        memoizer: ``celeriac.memoization.BasicMemoizer(...)``, Parsl's newer way to give
            ``app_cache`` (its ``memoize``) and the ``checkpoint_*`` options.
        monitoring: record the run in ``<run dir>/monitoring.sqlite3`` (read by
            ``celeriac status`` and ``celeriac report``): True (the default) or Parsl's
            ``MonitoringHub(...)`` (its hub address and ports are not used) turn it on, False
            or None turn it off.
        progress: draw a progress bar on stderr when it is a terminal, and print the
            end-of-run summary there (it is logged in any case). False: neither.
        usage_tracking, project_name, garbage_collect: Parsl's; accepted so
            that Parsl configs load, and ignored (the run log says so).
        dependency_resolver: which futures in an app call's arguments are dependencies:
            None (Parsl's shallow rule: futures passed directly, or in ``inputs=``), or a
            ``celeriac.dependency_resolvers.DependencyResolver`` such as
            ``DEEP_DEPENDENCY_RESOLVER`` (also futures inside lists, tuples, sets, dicts).

    Raises:
        ConfigurationError: an option has an impossible value.
    """

    def __init__(
        self,
        executors: Optional[Sequence] = None,
        *,
        broker: Optional[str] = None,
        app_cache: bool = True,
        checkpoint_files: Optional[Sequence[str]] = None,
        checkpoint_mode: Optional[str] = None,
        checkpoint_period: Optional[str] = None,
        retries: int = 0,
        retry_handler: Optional[Callable] = None,
        retry_policy=None,
        worker_lost_retries: int = 3,
        run_dir: str = "runinfo",
        strategy: Optional[str] = "simple",
        strategy_period: float = 5,
        max_idletime: float = 120.0,
        exit_mode: str = "cleanup",
        initialize_logging: bool = True,
        internal_tasks_max_threads: int = 10,
        dependency_resolver=None,
        std_autopath: Optional[Callable] = None,
        memoizer=None,
        monitoring=True,
        progress: bool = True,
        **parsl_options,
    ):
        from celeriac.orchestrator import parsl_options as parsl
        self.ignored_options = parsl.accept(Config, parsl_options, parsl.CONFIG)
        if memoizer is not None:
            from celeriac.orchestrator.memo import BasicMemoizer
            if not isinstance(memoizer, BasicMemoizer):
                raise ConfigurationError(
                    f"memoizer must be a celeriac.memoization.BasicMemoizer, not "
                    f"{type(memoizer).__name__}")
            if app_cache is not True or checkpoint_files or checkpoint_mode or \
                    checkpoint_period:
                raise ConfigurationError(
                    "give the memoization options either as memoizer=BasicMemoizer(...) or "
                    "as Config's app_cache/checkpoint_* options, not both")
            app_cache, checkpoint_files = memoizer.memoize, memoizer.checkpoint_files
            checkpoint_mode, checkpoint_period = (memoizer.checkpoint_mode,
                                                  memoizer.checkpoint_period)
        if std_autopath is not None and not callable(std_autopath):
            raise ConfigurationError(
                "std_autopath must be a function (task_record, 'stdout' or 'stderr') -> path")
        self.std_autopath = std_autopath
        self.executors = list(executors or [])
        _check_executors(self.executors)
        _check_options(locals())
        self.checkpoint_seconds = _period(checkpoint_period or "00:30:00")
        from celeriac.orchestrator.retries import make_policy
        retry_policy = make_policy(retry_policy, "Config(retry_policy=...)")
        self.broker = broker
        self.app_cache = app_cache
        self.checkpoint_files = checkpoint_files
        self.checkpoint_mode = checkpoint_mode
        self.checkpoint_period = checkpoint_period
        self.retries = retries
        self.retry_handler = retry_handler
        self.retry_policy = retry_policy
        self.worker_lost_retries = worker_lost_retries
        self.run_dir = run_dir
        self.strategy = strategy
        self.strategy_period = strategy_period
        self.max_idletime = max_idletime
        self.exit_mode = exit_mode
        self.initialize_logging = initialize_logging
        self.internal_tasks_max_threads = internal_tasks_max_threads
        from celeriac.orchestrator.dependencies import DependencyResolver
        if dependency_resolver is not None and not isinstance(dependency_resolver,
                                                              DependencyResolver):
            raise ConfigurationError(
                "dependency_resolver must be a celeriac.dependency_resolvers.DependencyResolver "
                f"(e.g. DEEP_DEPENDENCY_RESOLVER), not {type(dependency_resolver).__name__}")
        self.dependency_resolver = dependency_resolver
        self.monitoring = monitoring
        self.progress = progress

    def __repr__(self):
        return f"Config(executors={self.executors!r}, broker={'<set>' if self.broker else None})"


def _check_executors(executors: list) -> None:
    """Executors must be Executor objects with unique labels usable as queue names."""
    from celeriac.orchestrator.executors.base import Executor
    wrong = [e for e in executors if not isinstance(e, Executor)]
    if wrong:
        raise ConfigurationError(
            f"executors must be executor objects (CeleryExecutor(...), ThreadPoolExecutor(...)), "
            f"not {wrong!r}")
    labels = [getattr(e, "label", None) for e in executors]
    duplicates = sorted({lb for lb in labels if labels.count(lb) > 1})
    if duplicates:
        raise ConfigurationError(
            f"executor labels must be unique; {duplicates} appear more than once")
    for label in labels:
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ConfigurationError(
                f"executor label {label!r} is not usable as a queue name: "
                "use letters, digits, '_', '.', '-'")


def _check_options(o: dict) -> None:
    """Every other option of ``Config(...)`` (its arguments, by name), checked in one place.

    Raises:
        ConfigurationError: naming each option with an impossible value and what is allowed.
    """
    checks = OptionChecks("Config")
    checks.choice("checkpoint_mode", o["checkpoint_mode"], _CHECKPOINT_MODES)
    if o["checkpoint_period"] is not None and o["checkpoint_mode"] != "periodic":
        checks.problem("checkpoint_period is only used with checkpoint_mode='periodic'")
    if isinstance(o["checkpoint_files"], (str, bytes)):
        checks.problem(
            "checkpoint_files takes a list of directories, e.g. get_all_checkpoints()")
    checks.choice("exit_mode", o["exit_mode"], _EXIT_MODES)
    checks.choice("strategy", o["strategy"], _STRATEGIES,
                  hint="Parsl's htex_auto_scale is 'simple' here")
    checks.seconds("strategy_period", o["strategy_period"])
    checks.seconds("max_idletime", o["max_idletime"], zero_means="cancels idle blocks at once",
                   infinite_ok=True)
    checks.integer("retries", o["retries"])
    checks.integer("worker_lost_retries", o["worker_lost_retries"],
                   meaning="0: a lost worker costs a retry at once")
    checks.integer("internal_tasks_max_threads", o["internal_tasks_max_threads"], minimum=1,
                   meaning="threads for join apps and other in-process work")
    checks.kind("run_dir", o["run_dir"], (str, os.PathLike), "a directory path")
    checks.kind("app_cache", o["app_cache"], bool, "True or False")
    checks.kind("initialize_logging", o["initialize_logging"], bool, "True or False")
    checks.kind("progress", o["progress"], bool, "True or False")
    if o["retry_handler"] is not None and not callable(o["retry_handler"]):
        checks.problem(f"retry_handler must be a function (exception, task_record) -> cost, "
                       f"not {o['retry_handler']!r}")
    broker = o["broker"]
    if broker is not None and (not isinstance(broker, str) or not broker.startswith(
            ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://"))):
        scheme = broker.split("://")[0] if isinstance(broker, str) else repr(broker)
        checks.problem(f"broker {scheme}:// is not supported: use redis://host:port/db, "
                       "amqp://user:password@host:port/vhost for RabbitMQ, or leave broker "
                       "unset for the embedded Redis")
    checks.done()


def _period(text) -> float:
    """Seconds in an ``HH:MM:SS`` period."""
    match = re.fullmatch(r"(\d+):([0-5]?\d):([0-5]?\d)", str(text).strip())
    seconds = int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3]) if match else 0
    if seconds <= 0:
        raise ConfigurationError(
            f"checkpoint_period must be a positive 'HH:MM:SS' period, not {text!r}")
    return float(seconds)
