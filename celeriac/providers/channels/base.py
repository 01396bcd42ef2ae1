"""Channel: how a provider runs its batch commands and moves files, here or on another host.

The contract: :meth:`execute_wait` runs one shell command and returns ``(exit code, stdout,
stderr)`` (a non-zero exit is an answer, not an error); :meth:`push_file` and :meth:`pull_file`
copy one file and return where it landed (written under a temporary name and renamed into place,
so a scheduler never reads half a file, and never emptying a file copied onto itself);
:meth:`makedirs` creates a directory (and its parents). Failures of the channel itself (host
unreachable, key refused, unknown host key, copy failed) raise a
:class:`~celeriac.errors.ChannelError` subclass that says what to fix.
A channel is a context manager; :meth:`close` is safe to call twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional


class Channel(ABC):
    """Base of all channels. ``hostname`` names the host in errors and logs."""

    hostname: str = "localhost"
    #: where providers put submit scripts on the channel's host (set by the provider if None)
    script_dir: Optional[str] = None

    @abstractmethod
    def execute_wait(self, cmd: str, timeout: Optional[float] = None,
                     env: Optional[dict] = None) -> tuple:
        """Run ``cmd`` in a shell and wait for it.

        Args:
            cmd: a shell command line.
            timeout: seconds before the command is killed and ChannelError is raised.
            env: extra environment variables for the command.

        Returns:
            ``(exit_code, stdout, stderr)`` with text output.
        """

    @abstractmethod
    def push_file(self, source: str, dest_dir: str) -> str:
        """Copy the local file ``source`` into ``dest_dir`` on the host; return its path there.

        Guarantees, which every channel keeps:

        - The copy is written under a temporary name and renamed into place in one step: a
          reader (the scheduler reading a submit script) finds the old file or the whole new
          one, never a part of it.
        - The copy has the source's permission bits before any byte is written, and no other
          user can open it meanwhile: a 0600 file (the run file, which holds the run's
          secrets) is never readable by others, not even for a moment.
        - If the destination *is* the source (the host shares this file system, as a login
          node mounting the user's home does, and ``dest_dir`` is the source's directory),
          the file is left as it is, never truncated.

        Args:
            source: a local file.
            dest_dir: a directory on the host, created (mode 0700) if missing.

        Returns:
            The path of the copy on the host.

        Raises:
            FileCopyFailed: the source is unreadable or the host refused the copy.
        """

    @abstractmethod
    def pull_file(self, remote_source: str, local_dir: str) -> str:
        """Copy ``remote_source`` from the host into the local ``local_dir``; return the path."""

    @abstractmethod
    def makedirs(self, path: str, mode: int = 0o700, exist_ok: bool = True) -> None:
        """Create ``path`` and its parents on the host."""

    def close(self) -> None:
        """Release connections. Safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
