"""Dependency resolvers, importable as in Parsl
(``from celeriac.dependency_resolvers import DEEP_DEPENDENCY_RESOLVER``)."""

from celeriac.orchestrator.dependencies import *  # noqa: F403  (the same names, listed once)
from celeriac.orchestrator.dependencies import __all__  # noqa: F401
