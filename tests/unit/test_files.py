"""File references, and the DataFutures an app's outputs=[File(...)] give."""

import os
import pathlib
from concurrent.futures import Future

import pytest

from celeriac import DataFuture, File, python_app


def test_plain_path_is_a_local_file():
    f = File("/data/run/in.txt")
    assert (f.scheme, f.path, f.filepath, f.filename) == ("file", "/data/run/in.txt",
                                                          "/data/run/in.txt", "in.txt")


def test_relative_path_stays_relative():
    assert File("sub/x.csv").filepath == "sub/x.csv"


def test_file_url_gives_its_path():
    f = File("file:///data/run/in.txt")
    assert f.scheme == "file"
    assert f.filepath == "/data/run/in.txt"
    assert f.filename == "in.txt"


def test_remote_url_is_parsed_and_has_no_local_path_yet():
    f = File("https://example.org/data/genome.fa")
    assert (f.scheme, f.netloc, f.path, f.filename) == ("https", "example.org",
                                                        "/data/genome.fa", "genome.fa")
    with pytest.raises(ValueError, match="staged"):
        f.filepath


def test_pathlike_is_accepted_and_file_is_pathlike(tmp_path):
    f = File(tmp_path / "a.txt")
    assert f.filepath == str(tmp_path / "a.txt")
    assert os.fspath(f) == str(tmp_path / "a.txt")
    assert str(f) == str(tmp_path / "a.txt")
    assert pathlib.Path(f).name == "a.txt"


def test_non_path_is_a_type_error():
    with pytest.raises(TypeError, match="int"):
        File(3)


def test_files_compare_and_hash_by_url():
    assert File("/a") == File("/a")
    assert File("/a") != File("/b")
    assert len({File("/a"), File("/a"), File("/b")}) == 2
    assert File("/a").cleancopy() == File("/a")


def test_repr_shows_the_url():
    assert repr(File("ftp://h/x")) == "<File ftp://h/x>"


@python_app
def write(text, outputs=()):
    with open(outputs[0], "w") as fh:
        fh.write(text)
    return "written"


@python_app
def read(inputs=()):
    with open(inputs[0].filepath) as fh:
        return fh.read()


@python_app
def fail(outputs=()):
    raise OSError("disk full")


def test_outputs_give_data_futures_that_resolve_to_the_files(dfk, tmp_path):
    target = File(str(tmp_path / "out.txt"))
    fut = write("hello", outputs=[target])
    [out] = fut.outputs
    assert isinstance(out, DataFuture) and isinstance(out, Future)
    assert out.result(timeout=5) == target
    assert fut.result() == "written"
    assert (tmp_path / "out.txt").read_text() == "hello"
    assert out.tid == fut.tid
    assert out.filepath == target.filepath and out.filename == "out.txt"
    assert "out.txt" in repr(out)


def test_call_without_outputs_has_no_data_futures(dfk):
    fut = read(inputs=[File(__file__)])
    assert fut.outputs == []
    assert fut.result(timeout=5).startswith('"""File references')


def test_data_future_is_a_dependency(dfk, tmp_path):
    produced = write("through a file", outputs=[File(str(tmp_path / "mid.txt"))]).outputs[0]
    assert read(inputs=[produced]).result(timeout=5) == "through a file"


def test_data_future_fails_with_the_app_exception(dfk, tmp_path):
    out = fail(outputs=[File(str(tmp_path / "never.txt"))]).outputs[0]
    with pytest.raises(OSError, match="disk full"):
        out.result(timeout=5)


def test_several_outputs_each_get_a_data_future(dfk, tmp_path):
    @python_app
    def split(outputs=()):
        for i, f in enumerate(outputs):
            open(f, "w").write(str(i))

    files = [File(str(tmp_path / f"part{i}")) for i in range(3)]
    fut = split(outputs=files)
    assert [d.result(timeout=5) for d in fut.outputs] == files
    assert [open(f).read() for f in files] == ["0", "1", "2"]
