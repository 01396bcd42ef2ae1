"""The one way both channels turn a command into the line a shell runs.

A command runs as ``bash -c '<cmd>'`` after its environment is exported (quoted: fabric's own
``env=`` does not quote values). With a timeout it runs under coreutils ``timeout``, which
signals the command's whole process group, so a timed-out ``sleep 300 &`` does not outlive it
(invoke's and fabric's own timeouts only kill or abandon the outer shell).
"""

from __future__ import annotations

import re
import shlex
import time
from typing import Optional

from celeriac.errors import ConfigurationError

#: seconds ``timeout`` waits after TERM before it KILLs a timed-out command
KILL_AFTER = 5
#: extra seconds a channel waits beyond the timeout before it gives up on ``timeout`` itself
CLIENT_GRACE = KILL_AFTER + 10

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def command_line(cmd: str, timeout: Optional[float], env: dict) -> str:
    """The shell line that runs ``cmd`` with ``env`` exported, under ``timeout`` if given."""
    check_env_names(env)
    line = "".join(f"export {name}={shlex.quote(str(value))}; "
                   for name, value in env.items())
    if timeout is not None:
        line += f"timeout -k {KILL_AFTER} {float(timeout)} "
    return line + f"bash -c {shlex.quote(cmd)}"


def client_timeout(timeout: Optional[float]) -> Optional[float]:
    """How long the channel itself waits: a backstop in case ``timeout`` cannot kill."""
    return None if timeout is None else timeout + CLIENT_GRACE


def timed_out(exit_code: int, started: float, timeout: Optional[float]) -> bool:
    """Whether exit code 124 came from ``timeout`` (rather than from the command itself)."""
    return (timeout is not None and exit_code == 124
            and time.monotonic() - started >= timeout)


def check_env_names(env: dict) -> None:
    """Refuse names that are not shell variable names (they would be shell syntax)."""
    bad = [name for name in env if not _ENV_NAME.match(str(name))]
    if bad:
        raise ConfigurationError(f"invalid environment variable names {bad}: names are "
                                 "letters, digits and _, not starting with a digit")
