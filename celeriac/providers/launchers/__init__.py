"""Launchers: how a block's job script starts workers on each of its nodes."""

from celeriac.providers.launchers.base import Launcher
from celeriac.providers.launchers.batch import (
    AprunLauncher,
    JsrunLauncher,
    SrunLauncher,
    SrunMPILauncher,
)
from celeriac.providers.launchers.launchers import (
    GnuParallelLauncher,
    SimpleLauncher,
    SingleNodeLauncher,
    WrappedLauncher,
)
from celeriac.providers.launchers.mpi import MpiExecLauncher, MpiRunLauncher

__all__ = [
    "Launcher", "SimpleLauncher", "SingleNodeLauncher", "WrappedLauncher",
    "GnuParallelLauncher", "MpiExecLauncher", "MpiRunLauncher", "SrunLauncher",
    "SrunMPILauncher", "AprunLauncher", "JsrunLauncher",
]
