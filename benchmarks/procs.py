"""Run one child measurement and make sure nothing it started outlives it.

Systems start processes that leave the child's process group on purpose
(Parsl's LocalProvider launches workers with setpgrp and backgrounds them;
celeriac daemonises Redis and Celery workers), so killing the group is not
enough. The driver therefore makes itself a *child subreaper* (Linux prctl):
orphans of any child are re-parented to the driver instead of init, and after
every measurement every process below the driver is found through /proc and
killed. Leftovers after a normal exit are reported: a system that leaks
processes is a bug worth seeing.
"""
import ctypes
import json
import os
import signal
import subprocess
import tempfile
import time

MARK = "BENCH-RESULT "  # child result lines; anything else on stdout is ignored
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Adopt orphaned descendants (Linux only; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def descendants(root=None):
    """Live (non-zombie) processes below ``root`` (default: this process)."""
    root = root or os.getpid()
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for pid in children.get(stack.pop(), []):
            found.append(pid)
            stack.append(pid)
    return found


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:100]
    except OSError:
        return "?"


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap():
    """Collect exit statuses of adopted orphans so they do not stay zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep(grace=3.0):
    """Kill every process still below the driver. Gives them ``grace`` seconds to
    exit by themselves first (shutdown is asynchronous in most systems).
    Returns descriptions of those that had to be killed."""
    deadline = time.monotonic() + grace
    while descendants() and time.monotonic() < deadline:
        _reap()
        time.sleep(0.1)
    left = descendants()
    described = [f"{pid} {cmdline(pid)}" for pid in left]
    if left:
        _signal_all(left, signal.SIGTERM)
        time.sleep(1.0)
        _signal_all(descendants(), signal.SIGKILL)
        time.sleep(0.2)
    _reap()
    return described


def run_child(cmd, timeout, cwd, on_result=None):
    """Run ``cmd`` in a new session with a deadline; parse its MARK lines.

    Output goes to files, not pipes: a leaked grandchild holding a pipe open
    would otherwise block the read until the timeout. ``on_result`` sees each
    result line as it arrives (the memory soak streams). Returns a dict with
    ``results`` (parsed lines), ``returncode``, ``timed_out``, ``stderr_tail``
    and ``leftovers``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        with open(out_path, "w") as out, open(err_path, "w") as err, open(out_path) as reader:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=cwd, start_new_session=True)
            deadline, timed_out, results, buf = time.monotonic() + timeout, False, [], ""
            while True:
                finished = _wait(proc, 0.2)
                buf += reader.read()
                *lines, buf = buf.split("\n")
                for line in lines:
                    if line.startswith(MARK):
                        results.append(json.loads(line[len(MARK):]))
                        if on_result:
                            on_result(results[-1])
                if finished:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    _signal_all(descendants(proc.pid), signal.SIGKILL)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
        leftovers = sweep(grace=0 if timed_out else 3.0)
        with open(err_path, errors="replace") as f:
            tail = f.read()[-2000:].strip().splitlines()[-6:]
    return {"results": results, "returncode": proc.returncode, "timed_out": timed_out,
            "stderr_tail": tail, "leftovers": leftovers}


def _wait(proc, seconds):
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False
