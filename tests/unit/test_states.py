"""Task states: one place changes them, and it refuses moves that are not in the table."""

import pytest

from celeriac.errors import InvalidTransition
from celeriac.orchestrator.states import (
    FINAL_STATES,
    TRANSITIONS,
    States,
    TaskRecord,
)


def record(tid=7):
    return TaskRecord(id=tid, func=print, func_name="app", kind="python", args=(), kwargs={},
                      executor="threads")


def test_new_record_is_pending():
    assert record().status is States.pending


def test_legal_path_is_followed_and_remembered():
    r = record()
    r.move(States.launched)
    r.move(States.pending)      # a retry
    r.move(States.launched)
    r.move(States.exec_done)
    assert r.status is States.exec_done
    assert r.history == [States.pending, States.launched, States.pending, States.launched]
    assert r.time_returned is not None


def test_illegal_move_raises_invalid_transition_naming_the_history():
    r = record(tid=42)
    r.move(States.launched)
    r.move(States.exec_done)
    with pytest.raises(InvalidTransition) as info:
        r.move(States.launched)
    text = str(info.value)
    assert "task 42" in text
    assert "exec_done -> launched" in text
    assert "['pending', 'launched', 'exec_done']" in text


def test_refused_move_leaves_the_record_unchanged():
    r = record()
    with pytest.raises(InvalidTransition):
        r.move(States.exec_done)  # never launched
    assert r.status is States.pending
    assert r.history == []
    assert r.time_returned is None


@pytest.mark.parametrize("final", sorted(FINAL_STATES, key=lambda s: s.name))
def test_no_move_leaves_a_final_state(final):
    assert not [t for t in TRANSITIONS if t[0] is final]


@pytest.mark.parametrize("state", sorted(set(States) - FINAL_STATES, key=lambda s: s.name))
def test_every_unfinished_state_can_reach_a_final_state(state):
    reachable, frontier = set(), {state}
    while frontier:
        s = frontier.pop()
        for start, finish in TRANSITIONS:
            if start is s and finish not in reachable:
                reachable.add(finish)
                frontier.add(finish)
    assert reachable & FINAL_STATES


def test_dependency_failure_is_only_possible_before_launch():
    assert (States.pending, States.dep_fail) in TRANSITIONS
    assert not [t for t in TRANSITIONS if t[1] is States.dep_fail and t[0] is not States.pending]


def test_record_reads_like_a_dict_for_parsl_retry_handlers():
    r = record()
    r.fail_count = 2
    assert r["fail_count"] == 2
    assert r["func_name"] == "app"
