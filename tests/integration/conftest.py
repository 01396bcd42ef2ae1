"""Integration fixtures: a real embedded Redis and real `celery worker` processes."""

import pytest
from services import gridengine, rabbitmq, slurm, sshd  # noqa: F401  (session fixtures for every module)

import celeriac
from celeriac import Config
from celeriac.executors import CeleryExecutor


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("runinfo"))


@pytest.fixture(scope="module")
def dfk(run_dir):
    """A loaded DFK on the embedded broker with one local block of 2 solo workers."""
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=2)],
                             run_dir=run_dir))
    yield d
    d.cleanup()
    celeriac.clear()
