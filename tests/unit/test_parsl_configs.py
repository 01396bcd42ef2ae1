"""Parsl configs load after their imports change: options that mean nothing here are accepted
and logged, Parsl's newer memoizer= and std_autopath= work, and a typo is still an error."""

import logging
import os

import pytest

import celeriac
from celeriac import AUTO_LOGNAME, Config, bash_app
from celeriac.errors import ConfigurationError
from celeriac.executors import CeleryExecutor, ThreadPoolExecutor
from celeriac.memoization import BasicMemoizer


def test_parsl_only_options_are_accepted_and_the_run_log_names_them(tmp_path, caplog):
    config = Config([ThreadPoolExecutor(label="threads", remote_monitoring_radio=None)],
                    run_dir=str(tmp_path), usage_tracking=3, project_name="climate")
    with caplog.at_level(logging.INFO, logger="celeriac"):
        with celeriac.load(config):
            pass
    assert ("Config: ignoring Parsl options that mean nothing in celeriac: project_name, "
            "usage_tracking") in caplog.text
    assert "executor 'threads': ignoring Parsl options that mean nothing in celeriac: " \
        "remote_monitoring_radio" in caplog.text


def test_an_htex_config_ports_to_celery_executor_with_its_extra_options():
    executor = CeleryExecutor(label="htex", max_workers_per_node=2, address="10.0.0.1",
                              worker_debug=True, encrypted=True, start_method="spawn",
                              provider=None)
    assert executor.ignored_options == {"address": "10.0.0.1", "worker_debug": True,
                                        "encrypted": True, "start_method": "spawn"}


@pytest.mark.parametrize("make", [
    lambda: Config(usage_trackin=1),
    lambda: CeleryExecutor(max_worker_per_node=2, provider=None),
    lambda: ThreadPoolExecutor(max_thread=2),
], ids=["Config", "CeleryExecutor", "ThreadPoolExecutor"])
def test_a_misspelt_option_is_still_a_type_error_naming_the_closest(make):
    with pytest.raises(TypeError, match="unexpected keyword arguments .*did you mean"):
        make()


def test_memoizer_basic_memoizer_sets_the_memoization_options():
    config = Config(memoizer=BasicMemoizer(checkpoint_mode="task_exit", memoize=True,
                                           checkpoint_files=["runinfo/000/checkpoint"]))
    assert config.checkpoint_mode == "task_exit" and config.app_cache
    assert config.checkpoint_files == ["runinfo/000/checkpoint"]
    assert not Config(memoizer=BasicMemoizer(memoize=False)).app_cache


def test_memoizer_and_the_flat_options_together_are_a_configuration_error():
    with pytest.raises(ConfigurationError, match="not both"):
        Config(memoizer=BasicMemoizer(), checkpoint_mode="task_exit")


def test_std_autopath_chooses_where_auto_logname_streams_go(tmp_path):
    def autopath(record, stream):
        return os.path.join(str(tmp_path), f"{record['func_name']}-{record['id']}.{stream}")

    @bash_app
    def say(stdout=AUTO_LOGNAME):
        return "echo chosen"

    config = Config([ThreadPoolExecutor()], run_dir=str(tmp_path / "runs"),
                    std_autopath=autopath)
    with celeriac.load(config):
        fut = say()
        assert fut.result(timeout=5) == 0
    assert fut.stdout == str(tmp_path / f"say-{fut.tid}.stdout")
    assert open(fut.stdout).read() == "chosen\n"
