"""Channels: where a provider's batch commands run (this host, or another over SSH)."""

from celeriac.providers.channels.base import Channel
from celeriac.providers.channels.local import LocalChannel
from celeriac.providers.channels.ssh import SSHChannel

__all__ = ["Channel", "LocalChannel", "SSHChannel"]
