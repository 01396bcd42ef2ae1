"""Signed payloads: nothing is unpickled before its signature checks out."""

import linecache
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest

from celeriac.errors import SerializationError, UntrustedPayload
from celeriac.wire import payload


class WritesAFile:
    """Unpickling this runs code: it writes ``path``. A worker must never do that unverified."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('unpickled')",))


@pytest.fixture
def key():
    return payload.new_key()


def test_new_keys_are_random_hex_text():
    a, b = payload.new_key(), payload.new_key()
    assert a != b
    assert len(a) == 64 and int(a, 16) >= 0


def test_sign_then_verify_gives_back_the_data(key):
    assert payload.verify(key, payload.sign(key, b"some bytes")) == b"some bytes"


def test_seal_then_unseal_roundtrips_functions_and_values(key):
    factor = 3
    func, args = payload.unseal(key, payload.seal(key, (lambda x: x * factor, (14,))))
    assert func(*args) == 42


def test_control_a_verified_malicious_payload_does_run(key, tmp_path):
    # proves the payload below is live, so the refusals that follow mean something
    marker = tmp_path / "pwned"
    payload.unseal(key, payload.sign(key, pickle.dumps(WritesAFile(marker))))
    assert marker.read_text() == "unpickled"


def test_tampered_frame_is_refused_and_never_unpickled(key, tmp_path):
    marker = tmp_path / "pwned"
    honest = payload.sign(key, pickle.dumps("harmless"))
    mac = honest[1:33]
    tampered = b"S" + mac + pickle.dumps(WritesAFile(marker))  # data swapped, MAC kept
    with pytest.raises(UntrustedPayload, match="signature"):
        payload.unseal(key, tampered)
    assert not marker.exists()


def test_one_flipped_bit_is_refused(key):
    frame = bytearray(payload.seal(key, {"a": 1}))
    frame[-3] ^= 0x01
    with pytest.raises(UntrustedPayload):
        payload.unseal(key, bytes(frame))


def test_frame_signed_with_another_key_is_refused_and_never_unpickled(key, tmp_path):
    marker = tmp_path / "pwned"
    frame = payload.sign(payload.new_key(), pickle.dumps(WritesAFile(marker)))
    with pytest.raises(UntrustedPayload, match="different signing keys"):
        payload.unseal(key, frame)
    assert not marker.exists()


@pytest.mark.parametrize("frame", [b"", b"S", b"S" + b"x" * 10])
def test_short_frames_are_refused(key, frame):
    with pytest.raises(UntrustedPayload):
        payload.verify(key, frame)


def test_unsigned_pickle_is_refused_and_never_unpickled(key, tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UntrustedPayload, match="not signed"):
        payload.unseal(key, pickle.dumps(WritesAFile(marker)))
    assert not marker.exists()


def test_a_notice_is_never_taken_for_a_signed_payload(key):
    frame = payload.notice(error="wrong key", worker="w1")
    assert payload.is_notice(frame)
    assert payload.read_notice(frame) == {"error": "wrong key", "worker": "w1"}
    with pytest.raises(UntrustedPayload):
        payload.unseal(key, frame)
    assert not payload.is_notice(payload.seal(key, 1))


@pytest.mark.parametrize("thing", [threading.Lock(), (i for i in range(3))],
                         ids=["lock", "generator"])
def test_unpicklable_object_is_a_serialization_error_saying_what(thing):
    with pytest.raises(SerializationError) as info:
        payload.dumps(thing, "argument 'x' of app f")
    text = str(info.value)
    assert "could not serialize the argument 'x' of app f" in text
    assert "picklable" in text
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_sealing_an_unpicklable_object_is_a_serialization_error(key):
    with pytest.raises(SerializationError, match="result"):
        payload.seal(key, threading.Lock(), "result")


def test_verified_garbage_is_a_serialization_error_not_a_crash(key):
    with pytest.raises(SerializationError, match="deserialize"):
        payload.unseal(key, payload.sign(key, b"not a pickle"))


def test_key_is_read_from_a_file_without_its_newline(tmp_path):
    path = tmp_path / "worker.key"
    path.write_bytes(b"abc123\n")
    assert payload.load_key(str(path)) == b"abc123"


def test_key_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv(payload.KEY_ENV, "fromenv")
    assert payload.load_key() == b"fromenv"


def test_no_key_anywhere_is_refused_with_a_hint(monkeypatch):
    monkeypatch.delenv(payload.KEY_ENV, raising=False)
    with pytest.raises(UntrustedPayload) as info:
        payload.load_key()
    assert "--key-file" in str(info.value) and payload.KEY_ENV in str(info.value)


def test_empty_key_file_is_refused(tmp_path):
    path = tmp_path / "worker.key"
    path.write_bytes(b"\n")
    with pytest.raises(UntrustedPayload):
        payload.load_key(str(path))


# A "notebook cell": source that exists only in this process's linecache, as IPython does it.
CELL = "<notebook-cell-7>"
CELL_SOURCE = textwrap.dedent("""\
    def helper(x):
        return 1 / x

    def divide(x):
        y = x - x
        return helper(y)
    """)

# Unpickles a function from stdin in a fresh interpreter (no such file, nothing in its
# linecache), calls it and prints the traceback, as a worker on another machine would.
RUN_ELSEWHERE = textwrap.dedent("""\
    import pickle, sys, traceback
    func = pickle.loads(sys.stdin.buffer.read())
    try:
        func(3)
    except ZeroDivisionError:
        traceback.print_exc(file=sys.stdout)
    """)


def _traceback_elsewhere(func) -> str:
    done = subprocess.run([sys.executable, "-c", RUN_ELSEWHERE], input=payload.dumps(func),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def _define(source: str, filename: str):
    namespace = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["divide"]


def test_a_function_pickled_by_value_fails_elsewhere_with_its_file_line_and_source(monkeypatch):
    monkeypatch.setitem(linecache.cache, CELL,
                        (len(CELL_SOURCE), None, CELL_SOURCE.splitlines(True), CELL))
    text = _traceback_elsewhere(_define(CELL_SOURCE, CELL))
    assert f'File "{CELL}", line 6, in divide\n    return helper(y)' in text, text
    assert f'File "{CELL}", line 2, in helper\n    return 1 / x' in text, text
    assert "<dynamic-code>" not in text


def test_a_script_missing_where_it_runs_still_shows_the_lines_that_failed(tmp_path):
    script = tmp_path / "analysis.py"
    script.write_text("# an analysis script\n\n" + CELL_SOURCE)
    func = _define(script.read_text(), str(script))
    linecache.checkcache()
    data = payload.dumps(func)
    script.unlink()  # the worker's machine does not have the file
    linecache.clearcache()
    done = subprocess.run([sys.executable, "-c", RUN_ELSEWHERE], input=data,
                          capture_output=True, timeout=60)
    text = done.stdout.decode()
    assert f'File "{script}", line 8, in divide\n    return helper(y)' in text, text
    assert f'File "{script}", line 4, in helper\n    return 1 / x' in text, text


def test_carried_source_lines_do_not_hide_the_rest_of_a_file_the_worker_has(tmp_path):
    script = tmp_path / "both.py"
    script.write_text("FIRST = 1\n" + CELL_SOURCE + "LAST = 2\n")
    func = pickle.loads(payload.dumps(_define(script.read_text(), str(script))))
    assert linecache.getline(str(script), 1) == "FIRST = 1\n"
    assert linecache.getline(str(script), 7) == "    return helper(y)\n"
    assert linecache.getline(str(script), 8) == "LAST = 2\n"
    assert func.__code__.co_filename == str(script)
