"""Options that cannot work fail when the Config, executor or provider is made (or at load()
for what only the file system can tell), with a ConfigurationError naming the option and
what is allowed, instead of a run that hangs or fails later with a raw error."""

import math
import os

import pytest

import celeriac
from celeriac import Config, DataFlowKernel
from celeriac.errors import ConfigurationError
from celeriac.executors import CeleryExecutor, ThreadPoolExecutor
from celeriac.providers import LocalProvider, PBSProProvider, SlurmProvider

NAN = math.nan


def refused(make, *words):
    """``make()`` raises a ConfigurationError whose text holds every one of ``words``."""
    with pytest.raises(ConfigurationError) as info:
        make()
    text = str(info.value)
    for word in words:
        assert word in text, text
    return text


# ----------------------------------------------------------------- Config

@pytest.mark.parametrize("options, words", [
    ({"internal_tasks_max_threads": 0}, ["internal_tasks_max_threads", "integer >= 1"]),
    ({"internal_tasks_max_threads": 2.5}, ["internal_tasks_max_threads", "integer >= 1"]),
    ({"worker_lost_retries": -1}, ["worker_lost_retries", "integer >= 0"]),
    ({"worker_lost_retries": "3"}, ["worker_lost_retries", "integer >= 0"]),
    ({"retries": True}, ["retries", "integer >= 0"]),
    ({"max_idletime": NAN}, ["max_idletime", "seconds >= 0", "nan"]),
    ({"strategy_period": NAN}, ["strategy_period", "seconds > 0"]),
    ({"strategy_period": math.inf}, ["strategy_period", "finite"]),
    ({"run_dir": 5}, ["run_dir", "directory path"]),
    ({"app_cache": "yes"}, ["app_cache", "True or False"]),
    ({"initialize_logging": None}, ["initialize_logging", "True or False"]),
    ({"retry_handler": 3}, ["retry_handler", "function"]),
    ({"broker": 6379}, ["broker", "redis://"]),
])
def test_impossible_config_option_is_refused_naming_it(options, words):
    refused(lambda: Config(**options), "Config", *words)


def test_max_idletime_may_be_infinite_meaning_never_scale_in():
    assert Config(max_idletime=math.inf).max_idletime == math.inf


def test_every_problem_of_a_config_is_named_at_once():
    text = refused(lambda: Config(retries=-1, worker_lost_retries=-2,
                                  internal_tasks_max_threads=0))
    assert "retries must" in text and "worker_lost_retries must" in text \
        and "internal_tasks_max_threads must" in text


@pytest.mark.parametrize("executor", ["celery", LocalProvider(), None])
def test_an_executor_that_is_not_an_executor_is_refused(executor):
    refused(lambda: Config([executor]), "executors must be executor objects",
            "CeleryExecutor(...)")


def test_run_dir_that_cannot_be_made_fails_load_naming_run_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = Config([ThreadPoolExecutor(label="threads")], run_dir=str(blocker / "runinfo"))
    text = refused(lambda: celeriac.load(config), "run_dir", str(blocker / "runinfo"),
                   "Config(run_dir=...)")
    assert "Not a directory" in text
    with pytest.raises(celeriac.errors.NoDataFlowKernelError):
        celeriac.dfk()  # nothing half-loaded is left behind


def test_run_dir_without_write_permission_fails_load(tmp_path):
    if os.getuid() == 0:
        pytest.skip("root can write anywhere")
    base = tmp_path / "readonly"
    base.mkdir(mode=0o500)
    refused(lambda: DataFlowKernel(Config([ThreadPoolExecutor()], run_dir=str(base))),
            "run_dir", "Permission denied")


# ----------------------------------------------------------------- executors

@pytest.mark.parametrize("options, words", [
    ({"pool": "gevent"}, ["pool must be one of ['solo', 'prefork', 'threads']", "'gevent'",
                          "not supported", "use 'threads'"]),
    ({"pool": "eventlet"}, ["pool must be one of", "not supported"]),
    ({"pool": "forking"}, ["pool must be one of", "'forking'"]),
    ({"worker_loglevel": "LOUD"}, ["worker_loglevel must be one of", "'LOUD'", "'DEBUG'"]),
    ({"worker_loglevel": 10}, ["worker_loglevel must be one of"]),
    ({"concurrency": 0, "pool": "prefork"}, ["concurrency must be an integer >= 1"]),
    ({"concurrency": 4}, ["concurrency=4 needs pool='prefork' or 'threads'"]),
    ({"prefetch_multiplier": 0}, ["prefetch_multiplier must be an integer >= 1"]),
    ({"worker_start_timeout": NAN}, ["worker_start_timeout must be", "0 waits for ever"]),
    ({"worker_idle_timeout": math.inf}, ["worker_idle_timeout must be a finite"]),
    ({"cores_per_worker": NAN}, ["cores_per_worker must be a finite number > 0"]),
    ({"mem_per_worker": 0}, ["mem_per_worker must be"]),
    ({"max_workers_per_node": True}, ["max_workers_per_node must be an integer"]),
    ({"available_accelerators": -1}, ["available_accelerators must be a count >= 0"]),
    ({"worker_python": 3}, ["worker_python must be a path"]),
    ({"provider": "local"}, ["provider must be a provider", "None for workers started by hand"]),
])
def test_impossible_celery_executor_option_is_refused_naming_it(options, words):
    refused(lambda: CeleryExecutor(label="cx", **{"provider": None, **options}),
            "CeleryExecutor 'cx'", *words)


def test_log_level_names_are_taken_in_any_case():
    assert CeleryExecutor(provider=None, worker_loglevel="info").worker_loglevel == "INFO"


@pytest.mark.parametrize("max_threads", [0, -1, 1.5, None])
def test_thread_pool_needs_at_least_one_thread(max_threads):
    refused(lambda: ThreadPoolExecutor(label="t", max_threads=max_threads),
            "ThreadPoolExecutor 't'", "max_threads must be an integer >= 1")


# ----------------------------------------------------------------- providers

@pytest.mark.parametrize("make, words", [
    (lambda: LocalProvider(cmd_timeout=0), ["cmd_timeout must be a finite number of seconds"]),
    (lambda: LocalProvider(cmd_timeout=NAN), ["cmd_timeout"]),
    (lambda: LocalProvider(parallelism=NAN), ["parallelism must be a finite number >= 0"]),
    (lambda: LocalProvider(init_blocks=True), ["init_blocks must be an integer >= 0"]),
    (lambda: LocalProvider(max_blocks=-1), ["max_blocks must be an integer >= 0"]),
    (lambda: LocalProvider(nodes_per_block=0), ["nodes_per_block must be an integer >= 1"]),
    (lambda: LocalProvider(worker_init=["module load x"]), ["worker_init must be shell text"]),
    (lambda: SlurmProvider(cores_per_node=0), ["SlurmProvider", "cores_per_node must be"]),
    (lambda: SlurmProvider(mem_per_node=NAN), ["mem_per_node must be"]),
    (lambda: PBSProProvider(cpus_per_node=-2), ["cpus_per_node must be"]),
])
def test_impossible_provider_option_is_refused_naming_it(make, words):
    def build():  # the executor checks the provider's own options once they are all set
        return CeleryExecutor(provider=make())
    refused(build, *words)


def test_no_blocks_at_all_is_allowed_for_workers_started_by_hand():
    ex = CeleryExecutor(provider=LocalProvider(init_blocks=0, max_blocks=0))
    assert ex.provider.max_blocks == 0
