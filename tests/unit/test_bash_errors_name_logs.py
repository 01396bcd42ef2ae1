"""A failed bash app's error tells the user where its output went, or how to keep it."""

import pickle

import pytest

from celeriac import AUTO_LOGNAME, bash_app
from celeriac.errors import AppTimeout, BashExitFailure


@bash_app
def fails(stdout=None, stderr=None):
    return "echo working; echo broken >&2; exit 4"


@bash_app
def hangs(stdout=None, stderr=None, walltime=0.5):
    return "sleep 30"


def test_exit_failure_names_both_log_files(dfk, tmp_path):
    out, err = tmp_path / "fails.out", tmp_path / "fails.err"
    with pytest.raises(BashExitFailure) as info:
        fails(stdout=str(out), stderr=(str(err), "w")).result(timeout=10)
    message = str(info.value)
    assert message == (f"bash_app fails failed with unix exit code 4; stdout: {out}, "
                       f"stderr: {err}")
    assert err.read_text() == "broken\n"  # the file named holds what the user needs
    again = pickle.loads(pickle.dumps(info.value))  # it crosses process boundaries
    assert str(again) == message and again.exitcode == 4


def test_auto_logname_files_are_named(dfk):
    future = fails(stdout=AUTO_LOGNAME, stderr=AUTO_LOGNAME)
    message = str(future.exception(timeout=10))
    assert f"stdout: {future.stdout}" in message and f"stderr: {future.stderr}" in message


def test_without_log_files_the_error_says_how_to_keep_them(dfk):
    message = str(fails().exception(timeout=10))
    assert message.endswith("its output was not kept: pass stdout=celeriac.AUTO_LOGNAME "
                            "(and stderr=...) to keep it"), message


def test_timeout_names_the_shared_log_file(dfk, tmp_path):
    log = str(tmp_path / "hangs.log")
    exc = hangs(stdout=log, stderr=log).exception(timeout=20)
    assert isinstance(exc, AppTimeout)
    assert str(exc).endswith(f"exceeded walltime: 0.5 seconds; its output: {log}"), str(exc)
