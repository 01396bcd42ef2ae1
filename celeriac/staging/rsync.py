"""RSyncStaging: the worker copies local Files from and to a host with rsync over ssh."""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Optional

from celeriac.errors import StagingError
from celeriac.staging.base import Staging

__all__ = ["RSyncStaging"]


class RSyncStaging(Staging):
    """Stage ``file:`` Files between ``hostname`` (where their paths are) and the worker.

    Args:
        hostname: ``[user@]host`` holding the files, as in Parsl (usually the submit host).
        port: its sshd's port (default 22).
        key_filename: the private key to log in with (as ``SSHChannel``'s); None uses ssh's
            defaults (``~/.ssh``, an agent).
        known_hosts: a known_hosts file to check the host key against; None uses ssh's.
        timeout: seconds one transfer may take.

    Put it before ``NoOpFileStaging`` in ``storage_access`` (the first provider that takes a
    file wins). The worker runs ``rsync`` with ``ssh -o BatchMode=yes`` and strict host key
    checking, so it never stops at a prompt; it needs the ``rsync`` and ``ssh`` commands and
    a key the host accepts (Parsl's requirement too). The file goes to the worker's
    ``working_dir/filename`` before the app, and outputs back to their path after it.
    """

    def __init__(self, hostname: str, port: Optional[int] = None,
                 key_filename: Optional[str] = None, known_hosts: Optional[str] = None,
                 timeout: float = 600.0):
        self.hostname = hostname
        self.port = port
        self.key_filename = key_filename
        self.known_hosts = known_hosts
        self.timeout = timeout

    def can_stage_in(self, file) -> bool:
        return file.scheme == "file"

    def can_stage_out(self, file) -> bool:
        return file.scheme == "file"

    def stage_in(self, dm, executor, file, parent_fut):
        file.path = os.path.abspath(file.path)  # the remote name needs the absolute path
        return super().stage_in(dm, executor, file, parent_fut)

    def stage_out(self, dm, executor, file, app_fu):
        file.path = os.path.abspath(file.path)
        return super().stage_out(dm, executor, file, app_fu)

    def transfer_in(self, file, working_dir) -> None:
        self._rsync(file, f"{self.hostname}:{file.path}", file.local_path)

    def transfer_out(self, file, working_dir) -> None:
        self._rsync(file, file.local_path, f"{self.hostname}:{file.path}")

    def _rsync(self, file, source: str, destination: str) -> None:
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", "ConnectTimeout=10"]
        if self.port:
            ssh += ["-p", str(self.port)]
        if self.key_filename:
            ssh += ["-i", os.path.expanduser(self.key_filename)]
        if self.known_hosts:
            ssh += ["-o", f"UserKnownHostsFile={os.path.expanduser(self.known_hosts)}"]
        # --partial-dir: an interrupted copy never shows under the final name
        argv = ["rsync", "--times", "--partial-dir=.rsync-partial", "-e", shlex.join(ssh),
                source, destination]
        url = f"rsync://{self.hostname}{file.path}"
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise StagingError(url, "the rsync command is not installed on this worker "
                               f"({os.uname().nodename})") from None
        except subprocess.TimeoutExpired:
            raise StagingError(url, f"rsync took longer than {self.timeout} s") from None
        if done.returncode != 0:
            said = " ".join(done.stderr.split())[-500:]
            raise StagingError(url, f"rsync exited {done.returncode}: {said}")

    def __repr__(self):
        return f"RSyncStaging({self.hostname!r})"
