"""Private files and directories (0700 directories, 0600 files) whatever the umask, for what
celeriac writes into a run directory: results, secrets, logs and scripts of one user."""

from __future__ import annotations

import os
import stat

__all__ = ["PRIVATE_UMASK", "private_dir", "private_file", "is_private_dir"]

#: the umask of processes celeriac starts that write only into the run directory
PRIVATE_UMASK = 0o077


def private_dir(path: str) -> str:
    """Create ``path`` (and missing parents) as 0700 directories; returns it."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)
    return path


def private_file(path: str) -> str:
    """Create ``path`` empty if it does not exist, and make it 0600; returns it (then open it
    for appending or writing: opening an existing file keeps its mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    return path


def is_private_dir(path: str) -> bool:
    """Whether ``path`` is a directory only its owner can enter (no group/other bits)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and not mode & 0o077
