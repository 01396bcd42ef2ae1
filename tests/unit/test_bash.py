"""bash_app through the runner: exit codes, std streams, walltime, declared outputs."""

import os
import time

import psutil
import pytest

from celeriac import AUTO_LOGNAME, File, bash_app
from celeriac.errors import (
    AppTimeout,
    BadStdStreamFile,
    BashAppNoReturn,
    BashExitFailure,
    MissingOutputs,
)


@bash_app
def run(command, stdout=None, stderr=None, outputs=()):
    return command


def test_successful_command_resolves_to_zero(dfk):
    assert run("true").result(timeout=10) == 0


def test_command_line_is_built_from_the_arguments(dfk, tmp_path):
    @bash_app
    def greet(name, stdout=None):
        return f"echo hello {name}"

    out = tmp_path / "greet.out"
    assert greet("world", stdout=str(out)).result(timeout=10) == 0
    assert out.read_text() == "hello world\n"


def test_non_zero_exit_is_bash_exit_failure_with_exitcode(dfk):
    with pytest.raises(BashExitFailure) as info:
        run("exit 3").result(timeout=10)
    assert info.value.exitcode == 3
    assert "run" in str(info.value) and "3" in str(info.value)


def test_non_string_return_is_bash_app_no_return(dfk):
    @bash_app
    def forgets_to_return():
        pass

    with pytest.raises(BashAppNoReturn, match="forgets_to_return"):
        forgets_to_return().result(timeout=10)


def test_exception_building_the_command_is_raised_as_is(dfk):
    @bash_app
    def broken():
        raise LookupError("no such input")

    with pytest.raises(LookupError, match="no such input"):
        broken().result(timeout=10)


def test_stdout_and_stderr_paths_receive_the_streams(dfk, tmp_path):
    out, err = tmp_path / "o.txt", tmp_path / "e.txt"
    fut = run("echo to-out; echo to-err >&2", stdout=str(out), stderr=str(err))
    assert fut.result(timeout=10) == 0
    assert out.read_text() == "to-out\n"
    assert err.read_text() == "to-err\n"
    assert (fut.stdout, fut.stderr) == (str(out), str(err))


def test_same_path_for_stdout_and_stderr_collects_both(dfk, tmp_path):
    both = str(tmp_path / "both.txt")
    run("echo one; echo two >&2", stdout=both, stderr=both).result(timeout=10)
    assert sorted(open(both).read().split()) == ["one", "two"]


def test_stdout_path_appends_by_default(dfk, tmp_path):
    out = tmp_path / "log.txt"
    out.write_text("earlier\n")
    run("echo later", stdout=str(out)).result(timeout=10)
    assert out.read_text() == "earlier\nlater\n"


def test_stdout_path_mode_tuple_is_honoured(dfk, tmp_path):
    out = tmp_path / "log.txt"
    out.write_text("earlier\n")
    run("echo fresh", stdout=(str(out), "w")).result(timeout=10)
    assert out.read_text() == "fresh\n"


def test_stdout_directory_is_created(dfk, tmp_path):
    out = tmp_path / "deep" / "er" / "out.txt"
    run("echo made", stdout=str(out)).result(timeout=10)
    assert out.read_text() == "made\n"


def test_pathlike_stdout_is_accepted(dfk, tmp_path):
    out = tmp_path / "p.txt"
    run("echo pathlike", stdout=out).result(timeout=10)
    assert out.read_text() == "pathlike\n"


def test_auto_logname_puts_logs_under_the_run_dir(dfk):
    fut = run("echo auto-out; echo auto-err >&2", stdout=AUTO_LOGNAME, stderr=AUTO_LOGNAME)
    assert fut.result(timeout=10) == 0
    assert fut.stdout != fut.stderr
    for path in (fut.stdout, fut.stderr):
        assert os.path.commonpath([path, dfk.run_dir]) == dfk.run_dir
        assert "run" in os.path.basename(path)
    assert open(fut.stdout).read() == "auto-out\n"
    assert open(fut.stderr).read() == "auto-err\n"


def test_auto_logname_as_signature_default(dfk):
    @bash_app
    def logged(stdout=AUTO_LOGNAME):
        return "echo by-default"

    first, second = logged(), logged()
    assert (first.result(timeout=10), second.result(timeout=10)) == (0, 0)
    assert first.stdout != second.stdout  # one log per task
    assert open(first.stdout).read() == "by-default\n"
    assert first.stdout.startswith(dfk.run_dir)


def test_auto_logname_names_the_log_after_the_calls_label_as_parsl_does(dfk):
    @bash_app
    def step(label=None, stdout=AUTO_LOGNAME):
        return "echo labelled"

    fut = step(label="calibration")
    assert fut.result(timeout=10) == 0
    assert os.path.basename(fut.stdout) == f"task_{fut.tid:04d}_step_calibration.stdout"
    unlabelled = step()
    unlabelled.result(timeout=10)
    assert os.path.basename(unlabelled.stdout) == f"task_{unlabelled.tid:04d}_step.stdout"


def test_an_invalid_stream_mode_is_bad_std_stream_file(dfk, tmp_path):
    with pytest.raises(BadStdStreamFile, match="stdout"):
        run("true", stdout=(str(tmp_path / "out"), "bogus")).result(timeout=10)


@pytest.mark.parametrize("bad", [123, 4.5, ["a", "list"], ("path", "w", "extra")])
def test_unusable_stdout_is_bad_std_stream_file(dfk, bad):
    with pytest.raises(BadStdStreamFile, match="stdout"):
        run("true", stdout=bad).result(timeout=10)


def test_unopenable_stderr_is_bad_std_stream_file(dfk, tmp_path):
    with pytest.raises(BadStdStreamFile, match="stderr"):
        run("true", stderr=str(tmp_path)).result(timeout=10)  # a directory


def test_walltime_kills_a_long_command_quickly(dfk, tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    fut = run(f"sleep 30 & echo $! > {pidfile}; wait", walltime=0.5)
    with pytest.raises(AppTimeout, match="walltime"):
        fut.result(timeout=10)
    assert time.monotonic() - start < 5
    pid = int(pidfile.read_text())
    # the command's children are killed with it, not left running
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"sleep {pid} still running after the walltime")


def test_command_within_its_walltime_succeeds(dfk):
    assert run("sleep 0.1", walltime=5).result(timeout=10) == 0


def test_declared_outputs_that_are_missing_give_missing_outputs(dfk, tmp_path):
    made, never = File(str(tmp_path / "made")), File(str(tmp_path / "never"))
    fut = run(f"touch {made}", outputs=[made, never])
    with pytest.raises(MissingOutputs) as info:
        fut.result(timeout=10)
    assert info.value.outputs == [never.filepath]
    assert never.filepath in str(info.value)


def test_declared_outputs_that_exist_succeed(dfk, tmp_path):
    out = File(str(tmp_path / "made"))
    fut = run(f"echo data > {out}", outputs=[out])
    assert fut.result(timeout=10) == 0
    assert fut.outputs[0].result(timeout=5) == out


def test_bash_app_need_not_declare_stdout_to_use_it(dfk, tmp_path):
    @bash_app
    def bare():
        return "echo undeclared"

    out = tmp_path / "bare.out"
    assert bare(stdout=str(out)).result(timeout=10) == 0
    assert out.read_text() == "undeclared\n"
