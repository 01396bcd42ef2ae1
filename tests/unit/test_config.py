"""Config: impossible options fail when the Config is made, with a message saying why."""

import pytest

from celeriac import Config, DataFlowKernel
from celeriac.errors import ConfigurationError
from celeriac.executors import ThreadPoolExecutor


def test_defaults_follow_parsl():
    c = Config()
    assert c.executors == []
    assert c.retries == 0
    assert c.retry_handler is None
    assert c.app_cache is True
    assert c.checkpoint_mode is None
    assert c.exit_mode == "cleanup"
    assert c.run_dir == "runinfo"
    assert c.strategy == "simple"


def test_duplicate_executor_labels_are_refused_naming_the_label():
    with pytest.raises(ConfigurationError, match="'same'"):
        Config([ThreadPoolExecutor(label="same"), ThreadPoolExecutor(label="other"),
                ThreadPoolExecutor(label="same")])


@pytest.mark.parametrize("label", ["has space", "a/b", "", "-leading-dash"])
def test_label_unusable_as_a_queue_name_is_refused(label):
    with pytest.raises(ConfigurationError, match="label"):
        Config([ThreadPoolExecutor(label=label)])


def test_reserved_internal_label_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="reserved"):
        DataFlowKernel(Config([ThreadPoolExecutor(label="_celeriac_internal")],
                              run_dir=str(tmp_path)))


@pytest.mark.parametrize("option, value", [
    ("checkpoint_mode", "sometimes"),
    ("exit_mode", "explode"),
    ("strategy", "htex_auto_scale"),
])
def test_unknown_mode_is_refused_listing_the_choices(option, value):
    with pytest.raises(ConfigurationError) as info:
        Config(**{option: value})
    assert option in str(info.value) and value in str(info.value)


@pytest.mark.parametrize("mode", [None, "task_exit", "periodic", "dfk_exit", "manual"])
def test_parsl_checkpoint_modes_are_accepted(mode):
    assert Config(checkpoint_mode=mode).checkpoint_mode == mode


def test_checkpoint_period_without_periodic_mode_is_refused():
    with pytest.raises(ConfigurationError, match="periodic"):
        Config(checkpoint_mode="task_exit", checkpoint_period="00:10:00")


@pytest.mark.parametrize("retries", [-1, 1.5, "2"])
def test_retries_must_be_a_non_negative_int(retries):
    with pytest.raises(ConfigurationError, match="retries"):
        Config(retries=retries)


@pytest.mark.parametrize("broker", ["sqs://", "kafka://h:9092", "localhost:6379"])
def test_a_broker_of_another_kind_is_refused_saying_what_works(broker):
    with pytest.raises(ConfigurationError) as info:
        Config(broker=broker)
    assert broker.split("://")[0] in str(info.value)
    assert "redis://" in str(info.value) and "amqp://" in str(info.value)


@pytest.mark.parametrize("broker", ["amqp://guest:guest@localhost:5672//", "pyamqp://h//"])
def test_a_rabbitmq_broker_is_accepted(broker):
    assert Config(broker=broker).broker == broker


@pytest.mark.parametrize("broker", ["redis://localhost:6379/0", "rediss://:pw@host:6380/1"])
def test_redis_broker_is_accepted(broker):
    assert Config(broker=broker).broker == broker


def test_repr_does_not_show_the_broker_password():
    text = repr(Config(broker="redis://:hunter2@host:6379/0"))
    assert "hunter2" not in text
