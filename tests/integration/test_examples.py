"""The examples, run as a user runs them: `python examples/X.py`, Parsl code with new imports."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def run_example(name, cwd, stderr=False):
    proc = subprocess.run([sys.executable, os.path.abspath(os.path.join(EXAMPLES, name))],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return (proc.stdout, proc.stderr) if stderr else proc.stdout


def test_quickstart(tmp_path):
    out = run_example("quickstart.py", tmp_path)
    assert "double(double(3)) = 12" in out
    assert "sum of doubles 0..9 = 90" in out
    assert "bash app said: Hello, celeriac" in out
    assert (tmp_path / "runinfo" / "000" / "celeriac.log").exists()


def test_hello_world(tmp_path):
    out = run_example("hello.py", tmp_path)
    assert out.split("\n")[:2] == ["Hello World (Python)", "Hello World (Bash)"]


def test_map_reduce(tmp_path):
    assert run_example("map_reduce.py", tmp_path).strip() == "12"


def test_bash_apps_passing_files(tmp_path):
    out = run_example("bash_files.py", tmp_path)
    match = re.fullmatch(r"5 numbers, sum (\d+) \(expected (\d+)\)\n", out)
    assert match and match.group(1) == match.group(2), out


def test_error_handling(tmp_path):
    out, err = run_example("errors.py", tmp_path, stderr=True)
    assert out.splitlines() == ["caught: ZeroDivisionError('division by zero')",
                                "dependency failed: ZeroDivisionError",
                                "bash exit code: 3"]
    # The app is defined in the script's __main__: the worker's traceback names the script,
    # the function and the line, and shows its source.
    script = os.path.abspath(os.path.join(EXAMPLES, "errors.py"))
    line = _line_of(script, "    return a / b")
    assert f'File "{script}", line {line}, in divide\n    return a / b\n' in err, err


def _line_of(path, text):
    with open(path) as fh:
        return next(i for i, line in enumerate(fh, 1) if line.rstrip("\n") == text)
