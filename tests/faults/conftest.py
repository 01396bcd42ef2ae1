"""Fault tests: a fault a user can hit, reproduced for real, with the figures a user cares about.

Each test makes the fault happen (a worker killed or stopped, a broker restarted, a hostile
message, a bad config) and asserts, through :class:`Ledger`, how many tasks were submitted,
came back correct, were lost, ran twice, or hung, and the error text the user sees.
"""

import sys
from pathlib import Path

# The integration tests' service fixtures and process helpers serve these tests too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

import pytest  # noqa: E402
from services import gridengine, slurm, sshd  # noqa: E402,F401


def pytest_collection_modifyitems(items):
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
