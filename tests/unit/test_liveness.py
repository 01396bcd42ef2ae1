"""The supervisor's reading of its worker's running-tasks pipe (no broker)."""

import os

from celeriac.workers.liveness import AliveBeat, RunningNotes


def test_started_and_finished_tasks_are_tracked_across_partial_reads():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    beat = AliveBeat(client=None)
    notes = RunningNotes(write_end)
    notes.note(b"+", "a")
    os.write(write_end, b"+b")          # a line cut in two by the reader's timing
    beat.read("w", read_end)
    assert beat.running["w"] == {"a"}
    os.write(write_end, b"c\n")
    notes.note(b"-", "a")
    beat.read("w", read_end)
    assert beat.running["w"] == {"bc"}
    os.close(read_end)
    os.close(write_end)


def test_notes_go_nowhere_outside_a_supervised_worker(monkeypatch):
    monkeypatch.delenv("CELERIAC_RUNNING_FD", raising=False)
    notes = RunningNotes.from_environment()
    notes.note(b"+", "x")  # no pipe, no error
    assert notes.fd is None
