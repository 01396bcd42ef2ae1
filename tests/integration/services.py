"""Session fixtures that start real services (Slurm, Grid Engine, a private sshd, RabbitMQ)
with the scripts under ``tests/scripts``, and stop them at the end of the session if they
started them; plus Flower for one run, a worker started by hand and its stop, waiting for a
condition, and a look for processes a run left behind.

Slurm runs as a private two-node cluster (its own slurm.conf, ports 6827/6828, state under
/var/lib/celeriac-slurm-test) so that it never disturbs, nor is disturbed by, another Slurm on
the machine; node 2 is a slurmd in a network namespace with its own host name. Grid Engine
has one qmaster per machine, so its fixture reuses a running one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from celeriac.channels import SSHChannel

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

SLURM_ENV = {
    "SLURM_CONF": "/var/lib/celeriac-slurm-test/slurm.conf",
    "SLURM_STATE_DIR": "/var/lib/celeriac-slurm-test",
    "SLURM_CLUSTER": "celeriactest", "SLURM_CTLD_PORT": "6827", "SLURMD_PORT": "6828",
    "SLURM_SECOND_NODE": "celeriac-sn2", "SLURM_SECOND_IDX": "7",
}
SGE_ENV = {"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "default"}
SSHD_DIR = Path(os.environ.get("SSHD_DIR", "/var/lib/celeriac-sshd"))
SSHD_PORT = int(os.environ.get("SSHD_PORT", "2222"))
#: The test RabbitMQ: its own port (not 5698, which a developer's may use) and state dir.
RMQ_ENV = {"RMQ_PORT": "5699", "RMQ_DIST_PORT": "25699", "RMQ_NODE": "celeriactest",
           "STATE_DIR": "/tmp/celeriac-rabbitmq-test"}


@dataclass
class Scheduler:
    """A running scheduler: the environment its commands need, and its nodes' host names."""

    env: dict
    nodes: list = field(default_factory=list)


def _run_script(name: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / name)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def _answers(cmd: str, env: dict) -> bool:
    try:
        return subprocess.run(cmd, shell=True, env={**os.environ, **env}, timeout=15,
                              capture_output=True).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} tests install (apt) and start system daemons: run them as root")


def _start(script: str, env: dict, what: str) -> None:
    result = _run_script(script, env)
    if result.returncode != 0:
        pytest.fail(f"{script} could not start {what} (exit {result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def slurm():
    """A two-node Slurm cluster (this host and ``celeriac-sn2``), partition ``debug``."""
    _need_root("Slurm")
    munge_was_up = _answers("munge -n | unmunge", {})
    was_up = _answers("scontrol ping | grep -q UP", SLURM_ENV)
    _start("start_slurm.sh", SLURM_ENV, "Slurm")
    yield Scheduler(env={"SLURM_CONF": SLURM_ENV["SLURM_CONF"]},
                    nodes=[socket.gethostname().split(".")[0], SLURM_ENV["SLURM_SECOND_NODE"]])
    if not was_up:
        _run_script("stop_slurm.sh", {**SLURM_ENV, "KEEP_MUNGE": "1" if munge_was_up else "0"})


@pytest.fixture(scope="session")
def gridengine():
    """Son of Grid Engine on this host, queue ``all.q``."""
    _need_root("Grid Engine")
    was_up = _answers("qstat -f -q all.q | grep -q all.q@", SGE_ENV)
    _start("start_sge.sh", SGE_ENV, "Grid Engine")
    yield Scheduler(env=dict(SGE_ENV), nodes=[socket.gethostname().split(".")[0]])
    if not was_up:
        _run_script("stop_sge.sh", SGE_ENV)


@dataclass
class Sshd:
    host: str
    port: int
    key: str
    known_hosts: str

    def channel(self, **kwargs) -> SSHChannel:
        args = dict(hostname=self.host, username="root", port=self.port, key_filename=self.key,
                    host_keys_filename=self.known_hosts, connect_timeout=5)
        args.update(kwargs)
        return SSHChannel(**args)


@pytest.fixture(scope="session")
def sshd():
    """The private sshd, started for this session (and stopped after it) unless already up."""
    if os.geteuid() != 0:
        pytest.skip("the SSH channel tests start a private sshd: they need root")
    env = {**os.environ, "SSHD_DIR": str(SSHD_DIR), "SSHD_PORT": str(SSHD_PORT)}
    up = subprocess.run(["bash", str(SCRIPTS / "start_sshd.sh")], env=env, capture_output=True,
                        text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"start_sshd.sh failed:\n{up.stdout}\n{up.stderr}")
    yield Sshd("127.0.0.1", SSHD_PORT, str(SSHD_DIR / "client_key"),
               str(SSHD_DIR / "known_hosts"))
    if "already running" not in up.stdout:
        subprocess.run(["bash", str(SCRIPTS / "stop_sshd.sh")], env=env, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq():
    """The URL of a private RabbitMQ (Debian's rabbitmq-server on 127.0.0.1:5699, its data,
    logs and feature flags under /tmp/celeriac-rabbitmq-test), started for this session and
    stopped after it unless it was already up."""
    _need_root("RabbitMQ")
    up = _run_script("start_rabbitmq.sh", RMQ_ENV)
    if up.returncode != 0:
        pytest.fail(f"start_rabbitmq.sh failed:\n{up.stdout}\n{up.stderr}")
    yield f"amqp://guest:guest@127.0.0.1:{RMQ_ENV['RMQ_PORT']}//"
    if "already running" not in up.stdout:
        _run_script("stop_rabbitmq.sh", RMQ_ENV, timeout=120)


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


@contextlib.contextmanager
def flower(run_file: str):
    """``celeriac flower`` for the run of ``run_file``; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "flower", "--run-file", run_file,
         "--port", str(port)], env=dict(os.environ, FLOWER_UNAUTHENTICATED_API="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def processes_mentioning(text: str) -> list:
    """Every process on the machine with ``text`` in its command line."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


def start_worker(*args: str, env: dict | None = None, capture: bool = False) -> subprocess.Popen:
    """``celeriac worker *args``, as a user starts one by hand, with ``env`` added to this
    environment; its output piped (stderr into stdout) when ``capture``, else shown."""
    out = subprocess.PIPE if capture else None
    return subprocess.Popen([sys.executable, "-m", "celeriac", "worker", *args],
                            env=dict(os.environ, **(env or {})), stdout=out,
                            stderr=subprocess.STDOUT if capture else None)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate ``proc``; kill it if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_file(path):
    """Return ``path`` once it exists (at most a minute): as an app, it keeps a worker busy
    until the test creates the file."""
    import os
    import time
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return path


def wait_until(predicate, timeout: float = 60, what: str = "the condition"):
    """``predicate()``'s value once it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        time.sleep(0.1)
    return value
