"""LocalChannel: batch commands and files on this machine, through invoke (fabric's runner)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from typing import Optional

from celeriac.errors import ChannelError, FileCopyFailed
from celeriac.providers.channels import _shell
from celeriac.providers.channels.base import Channel


class LocalChannel(Channel):
    """Run commands with ``bash`` on this host; copy files with the file system.

    Args:
        script_dir: where providers write submit scripts (default: the run directory's
            ``submit_scripts``).
        envs: environment variables added to every command (Parsl's name).
    """

    hostname = "localhost"

    def __init__(self, script_dir: Optional[str] = None, envs: Optional[dict] = None):
        self.script_dir = script_dir
        self.envs = dict(envs or {})
        _shell.check_env_names(self.envs)

    def execute_wait(self, cmd: str, timeout: Optional[float] = None,
                     env: Optional[dict] = None) -> tuple:
        """Run ``cmd`` with bash and wait for it (see :class:`Channel`). A timed-out command
        is killed with its whole process group.

        Raises:
            ChannelError: the command timed out.
        """
        from invoke import Context
        from invoke.exceptions import CommandTimedOut

        line = _shell.command_line(cmd, timeout, {**self.envs, **(env or {})})
        started = time.monotonic()
        try:
            result = Context().run(line, hide=True, warn=True, in_stream=False, pty=False,
                                   timeout=_shell.client_timeout(timeout), shell="/bin/bash")
        except CommandTimedOut:
            result = None
        if result is None or _shell.timed_out(result.exited, started, timeout):
            raise ChannelError(self.hostname, f"command timed out after {timeout} s: {cmd}")
        return result.exited, result.stdout, result.stderr

    def push_file(self, source: str, dest_dir: str) -> str:
        """Copy ``source`` into ``dest_dir`` (created if missing), keeping its permission
        bits; see :class:`Channel` for the guarantees. Returns the new path.

        Raises:
            FileCopyFailed: ``source`` is unreadable or ``dest_dir`` refused the copy.
        """
        dest = os.path.join(dest_dir, os.path.basename(source))
        try:
            os.makedirs(dest_dir, exist_ok=True)
            if os.path.exists(dest) and os.path.samefile(source, dest):
                return dest  # the same file, whatever the path: copying would empty it
            mode = stat.S_IMODE(os.stat(source).st_mode)
            # mkstemp creates the file 0600, and it gets its own mode before any byte is
            # written; the rename replaces the destination in one step
            fd, temporary = tempfile.mkstemp(dir=dest_dir, prefix=f".{os.path.basename(dest)}.")
            try:
                with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
                    os.fchmod(dst.fileno(), mode)
                    shutil.copyfileobj(src, dst, 1 << 16)
                shutil.copystat(source, temporary)
                os.replace(temporary, dest)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        except OSError as exc:
            raise FileCopyFailed(self.hostname, f"cannot copy {source} to {dest_dir}: {exc}") \
                from exc
        return dest

    def pull_file(self, remote_source: str, local_dir: str) -> str:
        return self.push_file(remote_source, local_dir)

    def makedirs(self, path: str, mode: int = 0o700, exist_ok: bool = True) -> None:
        try:
            os.makedirs(path, mode=mode, exist_ok=exist_ok)
        except OSError as exc:
            raise ChannelError(self.hostname, f"cannot create directory {path}: {exc}") from exc

    def __repr__(self):
        return "LocalChannel()"
