"""Big values as files (celeriac.wire.bigvalues): the format, its checks and its cleanup, on
real files and a real killed process."""

import os
import pickle
import signal
import subprocess
import sys

import pytest

from celeriac.errors import BigValueUnavailable, UntrustedPayload
from celeriac.wire import payload
from celeriac.wire.bigvalues import MARK, ROOT_ENV, BigValues, dumps_result, loads, spill_dir
from celeriac.wire.call import Call

KEY = b"k" * 64
MB = 1 << 20


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    return tmp_path


def call(task_id, *args):
    return Call(task_id, 1, "app", "python", args=args)


def spilled(run_id):
    return sorted(n for n in os.listdir(spill_dir(run_id)) if not n.startswith("."))


def test_small_values_pickle_exactly_as_before():
    big = BigValues(KEY, "r1")
    c = call("t1", 1, "two", [3.0])
    assert big.dumps_call(None, c, "q", "args") == payload.dumps(c)
    assert dumps_result({"x": b"y" * 100}, KEY, "r1") == payload.dumps({"x": b"y" * 100})
    assert spilled("r1") == []


def test_values_only_cloudpickle_carries_still_arrive_inside_plain_containers():
    # Plain values take pickle's C pickler; anything else, however deep, still cloudpickle.
    class Label(str):
        pass

    class Box:
        def __init__(self, n):
            self.n = n

    big = BigValues(KEY, "r1")
    c = call("t1", 1, [2, {"k": Box(3)}], Label("x"), lambda v: v + 1)
    back = pickle.loads(big.dumps_call(None, c, "q", "args"))
    assert back.args[1][1]["k"].n == 3 and type(back.args[2]).__name__ == "Label"
    assert back.args[3](1) == 2
    assert pickle.loads(dumps_result([1, (Box(4),)], KEY, "r1"))[1][0].n == 4


def test_one_file_for_one_object_sent_to_several_tasks_until_the_last_finishes():
    big = BigValues(KEY, "r1")
    blob = os.urandom(2 * MB)
    frames = [big.dumps_call(None, call(f"t{i}", blob), "q", "args") for i in range(3)]
    assert all(f[:1] == MARK and len(f) < 1000 for f in frames)
    (name,) = spilled("r1")
    assert oct(os.stat(os.path.join(spill_dir("r1"), name)).st_mode & 0o777) == "0o600"
    assert oct(os.stat(spill_dir("r1")).st_mode & 0o777) == "0o700"
    assert loads(frames[2], KEY, "r1").args == (blob,)
    big.release("t0")
    big.release("t1")
    assert spilled("r1") == [name]
    big.release("t2")
    assert spilled("r1") == []


def test_a_changed_bytearray_is_written_again():
    big = BigValues(KEY, "r1")
    data = bytearray(2 * MB)
    first = big.dumps_call(None, call("t1", data), "q", "args")
    data[-1] = 9
    second = big.dumps_call(None, call("t2", data), "q", "args")
    assert len(spilled("r1")) == 2
    assert loads(first, KEY, "r1").args[0][-1] == 0
    assert loads(second, KEY, "r1").args[0][-1] == 9


def test_a_result_file_is_read_once_and_deleted():
    big = BigValues(KEY, "r1")
    frame = dumps_result(b"z" * (3 * MB), KEY, "r1")
    assert frame[:1] == MARK and len(spilled("r1")) == 1
    assert big.loads(frame) == b"z" * (3 * MB)
    assert spilled("r1") == []


@pytest.mark.parametrize("change", ["content", "size", "swap"])
def test_a_changed_or_swapped_file_is_refused(change):
    big = BigValues(KEY, "r1")
    frame = big.dumps_call(None, call("t1", b"a" * (2 * MB)), "q", "args")
    path = os.path.join(spill_dir("r1"), spilled("r1")[0])
    if change == "content":
        with open(path, "r+b") as fh:
            fh.write(b"b")
    elif change == "size":
        with open(path, "ab") as fh:
            fh.write(b"b")
    else:  # another file of the run, signed with another key, put in its place
        dumps_result(b"c" * (2 * MB), b"another key", "r1")
        other = [n for n in spilled("r1") if n.startswith("r-")][0]
        os.replace(os.path.join(spill_dir("r1"), other), path)
    with pytest.raises(UntrustedPayload, match="changed or replaced after it was written"):
        loads(frame, KEY, "r1")


def test_a_reader_without_the_file_is_told_why():
    big = BigValues(KEY, "r1")
    frame = big.dumps_call(None, call("t1", b"a" * (2 * MB)), "q", "args")
    with pytest.raises(BigValueUnavailable, match="runs on another host"):
        loads(frame, KEY, "another-run")


def test_a_worker_without_the_spill_directory_sends_results_inline():
    frame = dumps_result(b"z" * (2 * MB), KEY, "no-such-run")
    assert frame[:1] != MARK and payload.loads(frame) == b"z" * (2 * MB)


def test_a_crashed_runs_files_are_removed_by_the_next_run(root):
    script = (f"import os, signal; from celeriac.wire.bigvalues import BigValues; "
              f"from celeriac.wire.call import Call; b = BigValues({KEY!r}, 'dead'); "
              f"b.dumps_call(None, Call('t', 1, 'a', 'python', args=(os.urandom(2 << 20),)), "
              f"'q', 'a'); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ))
    assert proc.returncode == -signal.SIGKILL
    assert len(spilled("dead")) == 1
    alive = BigValues(KEY, "alive")  # a run of a live process: left alone
    BigValues(KEY, "next")
    assert not os.path.exists(spill_dir("dead"))
    assert os.path.isdir(alive.dir)
    alive.close()
    assert not os.path.exists(alive.dir)
