"""A run directory and everything celeriac writes in it are private to their user (0700
directories, 0600 files) whatever the umask, and a checkpoint that another user could have
written is refused rather than unpickled."""

import os
import stat

import pytest

import celeriac
from celeriac import AUTO_LOGNAME, Config, bash_app, python_app
from celeriac.errors import ConfigurationError
from celeriac.executors import ThreadPoolExecutor


@python_app(cache=True)
def square(x):
    return x * x


@bash_app
def hello(stdout=AUTO_LOGNAME, stderr=AUTO_LOGNAME):
    return "echo hello; echo oops >&2"


def modes_under(top):
    """``{path relative to top: (is_dir, permission bits)}`` of top and all it holds."""
    found = {".": (True, stat.S_IMODE(os.stat(top).st_mode))}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, top)] = (name in dirs,
                                                 stat.S_IMODE(os.lstat(path).st_mode))
    return found


def not_private(modes):
    return {p: oct(m) for p, (is_dir, m) in modes.items() if m != (0o700 if is_dir else 0o600)}


@pytest.fixture
def open_umask():
    """The loosest umask: what celeriac creates must be private by its own doing."""
    old = os.umask(0)
    yield
    os.umask(old)


def run_a_little(run_dir):
    config = Config([ThreadPoolExecutor(label="threads")], run_dir=str(run_dir),
                    checkpoint_mode="task_exit")
    with celeriac.load(config) as dfk:
        assert square(3).result(timeout=10) == 9
        fut = hello()
        assert fut.result(timeout=10) == 0
        with open(fut.stdout) as fh:
            assert fh.read() == "hello\n"
        return dfk.run_dir, dfk.checkpoint_dir


def test_everything_in_a_run_directory_is_private_whatever_the_umask(tmp_path, open_umask):
    run_dir, _ = run_a_little(tmp_path / "runinfo")
    modes = modes_under(run_dir)
    # what this run wrote: its log, its checkpoint database and the bash app's logs
    assert "celeriac.log" in modes and "checkpoint/tasks.sqlite3" in modes
    assert any(p.startswith("task_logs/") and p.endswith(".stdout") for p in modes)
    assert not_private(modes) == {}


def test_a_checkpoint_others_can_write_is_refused_naming_the_fix(tmp_path):
    _, checkpoint = run_a_little(tmp_path / "runinfo")
    os.chmod(checkpoint, 0o777)  # anyone may now replace tasks.sqlite3 by their own pickles
    config = Config([ThreadPoolExecutor(label="threads")], run_dir=str(tmp_path / "runinfo"),
                    checkpoint_files=[checkpoint])
    with pytest.raises(ConfigurationError) as info:
        celeriac.load(config)
    text = str(info.value)
    assert "checkpoint_files" in text and f"refusing to load {checkpoint}" in text
    assert "can be written by other users" in text and f"chmod go-w {checkpoint}" in text


def test_a_checkpoint_file_others_can_write_is_refused(tmp_path):
    _, checkpoint = run_a_little(tmp_path / "runinfo")
    os.chmod(os.path.join(checkpoint, "tasks.sqlite3"), 0o620)
    with pytest.raises(ConfigurationError, match="tasks.sqlite3 can be written by other"):
        celeriac.load(Config([ThreadPoolExecutor()], run_dir=str(tmp_path / "runinfo"),
                             checkpoint_files=[checkpoint]))


def test_a_private_checkpoint_is_used(tmp_path):
    _, checkpoint = run_a_little(tmp_path / "runinfo")
    with celeriac.load(Config([ThreadPoolExecutor()], run_dir=str(tmp_path / "runinfo"),
                              checkpoint_files=[checkpoint])):
        fut = square(3)
        assert fut.result(timeout=10) == 9
        assert fut.task_status() == "memo_done"
