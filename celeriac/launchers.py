"""Launchers, importable as in Parsl (``from celeriac.launchers import SrunLauncher``)."""

from celeriac.providers.launchers import *  # noqa: F403  (the same names, listed once)
from celeriac.providers.launchers import __all__  # noqa: F401
