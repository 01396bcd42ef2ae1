"""Launchers, importable as in Parsl (``from celeriac.launchers import SrunLauncher``)."""

from celeriac.providers.launchers import (
    AprunLauncher,
    GnuParallelLauncher,
    JsrunLauncher,
    Launcher,
    MpiExecLauncher,
    MpiRunLauncher,
    SimpleLauncher,
    SingleNodeLauncher,
    SrunLauncher,
    SrunMPILauncher,
    WrappedLauncher,
)

__all__ = [
    "Launcher", "SimpleLauncher", "SingleNodeLauncher", "WrappedLauncher",
    "GnuParallelLauncher", "MpiExecLauncher", "MpiRunLauncher", "SrunLauncher",
    "SrunMPILauncher", "AprunLauncher", "JsrunLauncher",
]
