"""Numbered run directories (runinfo/000, runinfo/001, ...), private to their user.

A run directory holds pickled results (checkpoints) that the orchestrator unpickles, the
run's secrets and its logs, so it is made 0700 whatever the umask, and what celeriac puts in
it is private too (:mod:`celeriac.private_files`): no other local user can read a result or
plant a checkpoint.
"""

from __future__ import annotations

import os
import re

from celeriac.errors import ConfigurationError

_NUMBERED = re.compile(r"^\d{3,}$")


def make_run_dir(base: str) -> str:
    """Create and return the next numbered directory under ``base`` (mode 0700).

    Raises:
        ConfigurationError: ``base`` cannot be created or written (names ``run_dir``).
    """
    try:
        os.makedirs(base, exist_ok=True)
        while True:
            taken = [int(n) for n in os.listdir(base) if _NUMBERED.match(n)]
            path = os.path.join(base, f"{max(taken, default=-1) + 1:03d}")
            try:
                os.mkdir(path, 0o700)  # atomic: two runs starting together get different numbers
            except FileExistsError:
                continue
            os.chmod(path, 0o700)     # whatever the umask
            return os.path.abspath(path)
    except OSError as e:
        raise ConfigurationError(
            f"run_dir {os.fspath(base)!r} cannot be used: {e.strerror or e}. Give "
            "Config(run_dir=...) a directory you can create and write") from None
