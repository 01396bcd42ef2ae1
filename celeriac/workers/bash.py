"""Running a bash app's command: stdout/stderr files, walltime, exit codes, declared outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from celeriac.errors import (
    AppTimeout,
    BadStdStreamFile,
    BashAppNoReturn,
    BashExitFailure,
    MissingOutputs,
    log_files_text,
)
from celeriac.private_files import is_private_dir, private_dir, private_file
from celeriac.wire.call import AppFailed, Call, Failure
from celeriac.workers.execute import stops_the_worker


def run_bash(func, call: Call) -> int:
    """Build the command with ``func``, run it under /bin/bash, return 0.

    Raises:
        AppFailed: carrying BashAppNoReturn, BadStdStreamFile, AppTimeout, BashExitFailure
            or MissingOutputs, or the exception ``func`` itself raised.
    """
    start = time.monotonic()
    try:
        command = func(*call.args, **call.kwargs)
    except BaseException as e:
        if stops_the_worker(e):
            raise
        raise AppFailed(Failure.capture(e, skip_frames=1, app_name=call.name)) from None
    if not isinstance(command, str):
        raise AppFailed(Failure(BashAppNoReturn(
            f"bash_app {call.name} must return the command line as a str, "
            f"but returned {type(command).__name__}: {command!r:.200}"), ""))
    out = _open_stream(call.stdout, "stdout")
    try:
        err = _open_stream(call.stderr, "stderr") if call.stderr != call.stdout else out
    except AppFailed:
        if out is not None:
            out.close()
        raise
    try:
        proc = subprocess.Popen(command, shell=True, executable="/bin/bash",
                                stdout=out, stderr=err, start_new_session=True)
    finally:
        for fh in {out, err} - {None}:
            fh.close()
    timeout = None
    if call.walltime is not None:
        timeout = max(0.0, call.walltime - (time.monotonic() - start))
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise AppFailed(Failure(AppTimeout(
            f"[{call.name}] App exceeded walltime: {call.walltime} seconds"
            + log_files_text(_path(call.stdout), _path(call.stderr))), "")) from None
    except BaseException:
        _kill_group(proc)
        raise
    if returncode != 0:
        raise AppFailed(Failure(BashExitFailure(call.name, returncode, _path(call.stdout),
                                                _path(call.stderr)), ""))
    missing = [f.filepath for f in call.outputs if not os.path.exists(f.filepath)]
    if missing:
        raise AppFailed(Failure(MissingOutputs(
            f"bash_app {call.name} exited 0 but did not create these outputs", missing), ""))
    return returncode


def _path(spec):
    """The path of a bash app's stdout/stderr target (a path or a (path, mode) tuple)."""
    if isinstance(spec, tuple):
        spec = spec[0] if spec else None
    return None if spec is None else os.path.abspath(os.fspath(spec))


def _open_stream(spec, name: str):
    """Open a bash app's stdout/stderr target: a path, a (path, mode) tuple, or None."""
    if spec is None:
        return None
    mode = "a+"
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise AppFailed(Failure(BadStdStreamFile(
                f"{name}={spec!r}: a tuple must be (path, mode)"), ""))
        spec, mode = spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise AppFailed(Failure(BadStdStreamFile(
            f"{name} must be a path, a (path, mode) tuple or AUTO_LOGNAME, "
            f"not {type(spec).__name__}"), ""))
    try:
        directory = os.path.dirname(os.path.abspath(spec))
        if _under_private_dir(directory):  # e.g. AUTO_LOGNAME's files in the run directory
            private_dir(directory)
            if not os.path.exists(spec):
                private_file(spec)
        elif directory:
            os.makedirs(directory, exist_ok=True)
        return open(spec, mode)
    except (OSError, ValueError) as e:  # ValueError: an invalid mode
        raise AppFailed(Failure(
            BadStdStreamFile(f"cannot open {name} file {spec!r}: {e}"), "")) from None


def _under_private_dir(directory: str) -> bool:
    """Whether the nearest existing directory at or above ``directory`` is private (0700,
    like a run directory): what is created in it stays private, whatever the umask."""
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    return is_private_dir(directory)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
