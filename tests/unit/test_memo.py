"""Memoization: the key of a call (id_for_memo, function identity) and the DFK's use of it."""

import threading

import numpy
import pytest

import celeriac
from celeriac import File, bash_app, id_for_memo, python_app
from celeriac.orchestrator.memo import function_identity, make_hash
from celeriac.orchestrator.states import States

# ---------------------------------------------------------------- id_for_memo

@pytest.mark.parametrize("a, b", [
    (None, False), (False, 0), (True, 1), (1, 1.0), ("1", 1), (b"x", "x"), ([1, 2], (1, 2)),
    ([1, 2], [2, 1]), ({1, 2}, [1, 2]), ("ab", "a" + "b" + " "), (0.1 + 0.2, 0.3),
    ({"a": 1}, {"a": 2}), (File("/tmp/a"), File("/tmp/b")), (["ab", "c"], ["a", "bc"]),
])
def test_different_values_have_different_ids(a, b):
    assert id_for_memo(a) != id_for_memo(b)


@pytest.mark.parametrize("a, b", [
    ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}), ({3, 1, 2}, {2, 3, 1}),
    (frozenset({"x", "y"}), {"y", "x"}), (File("/tmp/a"), File("/tmp/a")),
    ((1, "x", None, 2.5, b"z"), (1, "x", None, 2.5, b"z")),
])
def test_equal_values_have_equal_ids(a, b):
    assert id_for_memo(a) == id_for_memo(b)


def test_numpy_arrays_are_keyed_by_dtype_shape_and_content():
    a = numpy.arange(6)
    assert id_for_memo(a) == id_for_memo(numpy.arange(6))
    assert id_for_memo(a) != id_for_memo(a.reshape(2, 3))
    assert id_for_memo(a) != id_for_memo(a.astype("float64"))
    assert id_for_memo(a) != id_for_memo(numpy.arange(1, 7))


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def test_unknown_types_raise_value_error_naming_the_type():
    with pytest.raises(ValueError, match="unknown type for memoization: .*Point"):
        id_for_memo(Point(1, 2))
    with pytest.raises(ValueError, match="unknown type for memoization"):
        id_for_memo([1, {"k": Point(1, 2)}])


def test_users_register_their_own_types():
    class Box:
        def __init__(self, v):
            self.v = v

    @id_for_memo.register(Box)
    def _box(obj, output_ref=False):
        return b"Box:" + id_for_memo(obj.v)

    assert id_for_memo(Box(1)) == id_for_memo(Box(1)) != id_for_memo(Box(2))


# ---------------------------------------------------------------- keys

def test_editing_a_function_changes_its_key():
    namespace_a, namespace_b = {}, {}
    exec(compile("def f(x):\n    return x + 1\n", "<a>", "exec"), namespace_a)
    exec(compile("def f(x):\n    return x + 2\n", "<b>", "exec"), namespace_b)
    fa, fb = namespace_a["f"], namespace_b["f"]
    assert function_identity(fa, "f") != function_identity(fb, "f")
    assert make_hash(fa, "f", (1,), {}) != make_hash(fb, "f", (1,), {})


def test_key_depends_on_arguments_but_not_ignored_kwargs():
    def f(x, stdout=None):
        return x

    base = make_hash(f, "f", (1,), {"stdout": "a.out"}, ())
    assert base != make_hash(f, "f", (2,), {"stdout": "a.out"}, ())
    assert base != make_hash(f, "f", (1,), {"stdout": "b.out"}, ())
    assert make_hash(f, "f", (1,), {"stdout": "a.out"}, ("stdout",)) == \
        make_hash(f, "f", (1,), {"stdout": "b.out"}, ("stdout",))


# ---------------------------------------------------------------- the DFK

@python_app(cache=True)
def cached_double(x):
    return 2 * x


@python_app
def uncached_double(x):
    return 2 * x


def test_second_identical_call_is_served_from_the_memo_table(load_dfk, manual):
    load_dfk(manual)
    first = cached_double(21)
    manual.wait_for(1)[0].run()
    assert first.result(timeout=5) == 42
    second = cached_double(21)
    assert second.result(timeout=5) == 42
    assert second.task_record.status is States.memo_done
    assert len(manual.submissions) == 1
    assert cached_double(22) is not None and len(manual.wait_for(2)) == 2


def test_identical_calls_in_flight_at_once_run_once(load_dfk, manual):
    load_dfk(manual)
    futures = [cached_double(5) for _ in range(4)]
    manual.wait_for(1)[0].run()
    assert [f.result(timeout=5) for f in futures] == [10] * 4
    assert len(manual.submissions) == 1


def test_a_failed_call_is_memoized_within_the_run_as_in_parsl(load_dfk, manual):
    load_dfk(manual)
    first, twin = cached_double(7), cached_double(7)
    manual.wait_for(1)[0].fail(OSError("node went away"))
    with pytest.raises(OSError, match="node went away"):
        first.result(timeout=5)
    with pytest.raises(OSError, match="node went away"):
        twin.result(timeout=5)
    with pytest.raises(OSError, match="node went away"):
        cached_double(7).result(timeout=5)
    assert len(manual.submissions) == 1
    assert twin.task_status() == "failed"


def test_a_memoized_failure_is_not_checkpointed(load_dfk, manual, tmp_path):
    dfk = load_dfk(manual, checkpoint_mode="task_exit")
    ok, bad = cached_double(1), cached_double(9)
    first, second = manual.wait_for(2)
    first.run()
    second.fail(OSError("no"))
    assert ok.result(timeout=5) == 2
    with pytest.raises(OSError):
        bad.result(timeout=5)
    dfk.cleanup()
    celeriac.clear()
    load_dfk(manual, checkpoint_files=[dfk.checkpoint_dir])
    assert cached_double(1).result(timeout=5) == 2       # from the checkpoint
    again = cached_double(9)                              # not: it runs again
    manual.wait_for(3)[2].run()
    assert again.result(timeout=5) == 18


def test_calls_depending_on_futures_are_keyed_on_their_results(load_dfk, manual):
    load_dfk(manual)
    a, b = uncached_double(1), uncached_double(1)   # two different tasks, same result
    first, second = cached_double(a), cached_double(b)
    subs = manual.wait_for(2)
    subs[0].run()
    subs[1].run()
    manual.wait_for(3)[2].run()
    assert first.result(timeout=5) == second.result(timeout=5) == 4
    assert len(manual.submissions) == 3


def test_unknown_argument_type_fails_the_future_not_the_call(dfk):
    fut = cached_double(Point(1, 2))  # no error here
    with pytest.raises(ValueError, match="unknown type for memoization"):
        fut.result(timeout=5)
    assert fut.task_record.status is States.failed


def test_app_cache_false_turns_memoization_off(load_dfk, manual):
    load_dfk(manual, app_cache=False)
    cached_double(3)
    manual.wait_for(1)[0].run()
    cached_double(3)
    manual.wait_for(2)[1].run()
    assert len(manual.submissions) == 2


def test_uncached_apps_always_run(load_dfk, manual):
    load_dfk(manual)
    uncached_double(3)
    manual.wait_for(1)[0].run()
    uncached_double(3)
    assert len(manual.wait_for(2)) == 2


def test_ignore_for_cache_stdout_lets_different_log_files_share_a_result(load_dfk, tmp_path):
    load_dfk()
    runs = []
    lock = threading.Lock()

    @bash_app(cache=True, ignore_for_cache=["stdout"])
    def hello(stdout=None):
        with lock:
            runs.append(stdout)
        return "echo hello"

    assert hello(stdout=str(tmp_path / "a.out")).result(timeout=10) == 0
    assert hello(stdout=str(tmp_path / "b.out")).result(timeout=10) == 0
    assert len(runs) == 1


# ---------------------------------------------------------------- subclasses, kinds

def test_subclasses_of_builtin_types_are_not_taken_for_their_base():
    import collections
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    Pair = collections.namedtuple("Pair", "a b")
    assert id_for_memo(Colour.RED) != id_for_memo(1)  # keyed as an enum member
    with pytest.raises(ValueError, match="unknown type for memoization: .*Pair"):
        id_for_memo(Pair(1, 2))
    with pytest.raises(ValueError, match="defaultdict"):
        id_for_memo(collections.defaultdict(int))


def test_object_and_masked_numpy_arrays_are_refused_not_hashed_by_address():
    with pytest.raises(ValueError, match="unknown type"):
        id_for_memo(numpy.array([object()], dtype=object))
    with pytest.raises(ValueError, match="unknown type"):
        id_for_memo(numpy.ma.masked_array([1, 2], mask=[0, 1]))


def test_a_python_app_and_a_bash_app_of_one_function_have_different_keys():
    def f(x):
        return f"echo {x}"

    assert make_hash(f, "f", (1,), {}, (), "python") != make_hash(f, "f", (1,), {}, (), "bash")


def test_a_checkpointed_result_that_cannot_be_loaded_is_a_miss(load_dfk, manual, caplog):
    from celeriac.orchestrator.memo import MemoTable
    dfk = load_dfk(manual)
    key = make_hash(cached_double.func, "cached_double", (8,), {}, (), "python")
    dfk._kernel.memo = MemoTable({key: b"not a pickle"})
    fut = cached_double(8)
    manual.wait_for(1)[0].run()
    assert fut.result(timeout=5) == 16
    assert "cannot be loaded" in caplog.text
