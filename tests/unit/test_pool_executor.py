"""ParslPoolExecutor: code written for concurrent.futures runs its calls as celeriac tasks."""

import threading

import pytest

from celeriac import Config
from celeriac.concurrent import ParslPoolExecutor
from celeriac.errors import ConfigurationError
from celeriac.executors import ThreadPoolExecutor


def where(x):
    return x, threading.current_thread().name


def config(tmp_path):
    return Config([ThreadPoolExecutor(label="pool", max_threads=2)], run_dir=str(tmp_path))


def test_map_and_submit_run_as_tasks_of_the_pools_own_dfk(tmp_path):
    with ParslPoolExecutor(config(tmp_path)) as pool:
        results = list(pool.map(where, range(5)))
        assert [x for x, _ in results] == list(range(5))
        assert all(name.startswith("celeriac-pool") for _, name in results)
        first = pool.submit(abs, -3)
        assert pool.submit(abs, first).result(timeout=5) == 3  # a future is a dependency
        dfk = pool.dfk
    assert dfk.cleanup_called


def test_a_dfk_passed_in_is_left_running(load_dfk):
    dfk = load_dfk()
    with ParslPoolExecutor(dfk=dfk) as pool:
        assert pool.submit(pow, 2, 10).result(timeout=5) == 1024
    assert not dfk.cleanup_called
    assert pool.get_app(pow) is pool.get_app(pow)


def test_a_pool_needs_a_config_or_a_dfk_but_not_both(load_dfk):
    with pytest.raises(ConfigurationError, match="config= or a dfk="):
        ParslPoolExecutor()
    with pytest.raises(ConfigurationError):
        ParslPoolExecutor(Config(), dfk=load_dfk())
