"""The exception tree: one root, and every class survives pickling (they cross processes)."""

import pickle

import pytest

import celeriac.errors as errors
from celeriac.errors import CeleriacError

# Constructor arguments for classes that take more than a message.
EXAMPLES = {
    "InvalidResourceSpecification": lambda cls: cls({"gpus"}, "executor 'x' rejects gpus"),
    "ExecutorError": lambda cls: cls("celery", "workers never started"),
    "ProviderError": lambda cls: cls("slurm", "squeue failed", "", "slurm_load_jobs error"),
    "ScaleOutFailed": lambda cls: cls("slurm", "sbatch failed", "", "invalid partition"),
    "ChannelError": lambda cls: cls("node1", "command timed out"),
    "HostUnreachable": lambda cls: cls("node1", "connection refused on port 22"),
    "AuthenticationFailed": lambda cls: cls("node1", "key refused"),
    "BadHostKey": lambda cls: cls("node1", "not in known_hosts"),
    "FileCopyFailed": lambda cls: cls("node1", "no such file"),
    "StagingError": lambda cls: cls("ftp://me:secret@host/data.txt", "530 Login incorrect"),
    "InvalidTransition": lambda cls: cls(4, "exec_done", "launched",
                                         ["pending", "launched", "exec_done"]),
    "DependencyError": lambda cls: cls([(ValueError("up"), "task 3"),
                                        (KeyError("k"), "<Future at 0x1 state=finished>")], 5),
    "JoinError": lambda cls: cls([(RuntimeError("inner"), "task 8")], 9),
    "BashExitFailure": lambda cls: cls("wc", 127),
    "MessageTooLarge": lambda cls: cls("135 MiB is over the limit; raise it", ["run.3.1"]),
    "AppExited": lambda cls: cls("poison", "called sys.exit(3)", 3),
    "MissingOutputs": lambda cls: cls("exited 0 without them", ["/tmp/a", "/tmp/b"]),
    "RemoteTraceback": lambda cls: cls("Traceback (most recent call last):\n  ...\nValueError: x"),
}


def example(name):
    cls = getattr(errors, name)
    return EXAMPLES.get(name, lambda c: c(f"{name} happened; do this instead"))(cls)


def comparable(value):
    """Exceptions compare by identity; compare them by type and arguments instead."""
    if isinstance(value, BaseException):
        return (type(value), value.args)
    if isinstance(value, (list, tuple)):
        return type(value)(comparable(v) for v in value)
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name", errors.__all__)
def test_error_pickles_with_its_attributes_and_message(name):
    original = example(name)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is type(original)
    assert str(copy) == str(original)
    assert comparable(vars(copy)) == comparable(vars(original))
    assert comparable(copy.args) == comparable(original.args)


@pytest.mark.parametrize("name", [n for n in errors.__all__ if n != "RemoteTraceback"])
def test_every_error_is_a_celeriac_error(name):
    assert issubclass(getattr(errors, name), CeleriacError)


def test_remote_traceback_is_not_a_celeriac_error():
    # it only carries a worker's traceback text as __cause__ of the user's own exception
    assert issubclass(errors.RemoteTraceback, Exception)
    assert not issubclass(errors.RemoteTraceback, CeleriacError)


@pytest.mark.parametrize("name", ["AppTimeout", "BashExitFailure", "BashAppNoReturn",
                                  "BadStdStreamFile", "MissingOutputs", "AppExited"])
def test_app_detected_failures_are_app_exceptions(name):
    assert issubclass(getattr(errors, name), errors.AppException)


def test_invalid_resource_specification_is_a_configuration_error():
    assert issubclass(errors.InvalidResourceSpecification, errors.ConfigurationError)


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_drawn_in_the_module_docstring(name):
    assert name in errors.__doc__


def test_every_exception_class_in_the_module_is_exported():
    classes = {n for n, v in vars(errors).items()
               if isinstance(v, type) and issubclass(v, BaseException)
               and v.__module__ == errors.__name__}
    assert classes == set(errors.__all__)


def test_messages_say_what_failed():
    assert str(errors.BashExitFailure("wc", 2)).startswith(
        "bash_app wc failed with unix exit code 2; ")
    assert "celery" in str(errors.ExecutorError("celery", "no workers"))
    assert "no workers" in str(errors.ExecutorError("celery", "no workers"))
    assert "['gpus']" in str(errors.InvalidResourceSpecification({"gpus"}))
    dep = errors.DependencyError([(ValueError(), "task 3"), (ValueError(), "<Future at 0x1>")], 5)
    assert str(dep) == ("Dependency failure for task 5 with failed dependencies from task 3, "
                        "<Future at 0x1>")
