"""Bash fragments the launchers share, so every generated script starts and ends the same way.

Parsl's launcher scripts carry a few bugs that these fragments avoid:

- the command is written with an *unquoted* heredoc, so ``$VARS`` and backticks in it expand
  once in the job script instead of in each copy; here it is read with a quoted heredoc into
  ``$CMD`` and handed to each copy as one ``bash -c`` argument (no ``cmd_$JOBNAME.sh`` file in
  the working directory, so two blocks never overwrite each other's);
- with ``debug=False`` the last line ``[[ "0" == "1" ]] && echo ...`` made a successful script
  exit 1; debug lines are only emitted when debug is on;
- a background launch followed by a bare ``wait`` always exits 0; launches run in the
  foreground or are waited for by pid, so a failed copy fails the block.
"""

from __future__ import annotations

import shlex

_EOF = "CELERIAC_LAUNCHER_CMD_EOF"


def preamble(debug: bool, worker_count: int, exports: dict) -> str:
    """``set -e``, the exported variables (e.g. ``CORES``), optional debug echoes, WORKERCOUNT."""
    lines = ["set -e"]
    lines += [f"export {name}={value}" for name, value in exports.items()]
    if debug:
        lines += [f'echo "Found {name.lower()} : ${name}"' for name in exports]
    lines.append(f"WORKERCOUNT={worker_count}")
    return "\n".join(lines) + "\n"


def command_variable(command: str) -> str:
    """Read ``command`` verbatim into ``$CMD`` (a quoted heredoc expands nothing)."""
    if _EOF in command:
        raise ValueError(f"the command may not contain the line {_EOF}")
    return f"IFS= read -r -d '' CMD <<'{_EOF}' || true\n{command}\n{_EOF}\n"


def nodes_file(local_name: str) -> str:
    """Write the block's distinct hosts to ``$NODEFILE`` (a temporary file removed on exit):
    from ``$PBS_NODEFILE`` when the batch system provides one, else just this host."""
    return (
        'NODEFILE=$(mktemp)\n'
        'trap \'rm -f "$NODEFILE"\' EXIT\n'
        'if [ -n "${PBS_NODEFILE:-}" ]; then\n'
        '    sort -u "$PBS_NODEFILE" > "$NODEFILE"\n'
        'else\n'
        f'    echo {shlex.quote(local_name)} > "$NODEFILE"\n'
        'fi\n'
    )


def done(debug: bool, message: str = "All workers done") -> str:
    return f'echo "{message}"\n' if debug else ""


def command_line(*words: str) -> str:
    """Join the non-empty words of a launch command (an empty ``overrides`` leaves no gap)."""
    return " ".join(word for word in words if word) + "\n"
