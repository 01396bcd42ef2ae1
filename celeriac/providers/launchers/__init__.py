"""Launchers: how a block's job script starts workers on each of its nodes."""

from celeriac.providers.launchers.base import Launcher
from celeriac.providers.launchers.launchers import SimpleLauncher, SingleNodeLauncher

__all__ = ["Launcher", "SimpleLauncher", "SingleNodeLauncher"]
