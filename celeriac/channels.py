"""Channels, importable as in Parsl (``from celeriac.channels import SSHChannel``)."""

from celeriac.providers.channels.base import Channel
from celeriac.providers.channels.local import LocalChannel
from celeriac.providers.channels.ssh import SSHChannel

__all__ = ["Channel", "LocalChannel", "SSHChannel"]
