"""Launchers: how a block's job script starts workers on each of its nodes."""

from celeriac.providers.launchers.base import Launcher

__all__ = ["Launcher"]
