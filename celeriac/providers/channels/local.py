"""LocalChannel: batch commands and files on this machine, through invoke (fabric's runner)."""

from __future__ import annotations

import os
import shutil
from typing import Optional

from celeriac.errors import ChannelError, FileCopyFailed
from celeriac.providers.channels.base import Channel


class LocalChannel(Channel):
    """Run commands with ``bash`` on this host; copy files with the file system.

    Args:
        script_dir: where providers write submit scripts (default: the run directory's
            ``submit_scripts``).
        env: environment variables added to every command.
    """

    hostname = "localhost"

    def __init__(self, script_dir: Optional[str] = None, env: Optional[dict] = None):
        self.script_dir = script_dir
        self.env = dict(env or {})

    def execute_wait(self, cmd: str, timeout: Optional[float] = None,
                     env: Optional[dict] = None) -> tuple:
        from invoke import Context
        from invoke.exceptions import CommandTimedOut
        try:
            result = Context().run(cmd, hide=True, warn=True, in_stream=False, pty=False,
                                   timeout=timeout, env={**self.env, **(env or {})},
                                   shell="/bin/bash")
        except CommandTimedOut as exc:
            raise ChannelError(self.hostname, f"command timed out after {timeout} s: {cmd}") \
                from exc
        return result.exited, result.stdout, result.stderr

    def push_file(self, source: str, dest_dir: str) -> str:
        dest = os.path.join(dest_dir, os.path.basename(source))
        if os.path.abspath(source) == os.path.abspath(dest):
            return dest
        try:
            os.makedirs(dest_dir, exist_ok=True)
            shutil.copy2(source, dest)
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
