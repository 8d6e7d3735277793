"""Channels: one module per platform, all behind the small interface in `base`.

A channel author needs one import:

    from broadcaster.channels import Channel, ChannelSettings, ChannelSpec, Post, Receipt
    from broadcaster.channels import TransientDeliveryError, PermanentDeliveryError

and registers the class under the `broadcaster.channels` entry point of their package. A
channel may ship its templates in its own package (`Channel.templates_package`), and checks
itself against the contract with `broadcaster.channels.testing.check_channel`. The names are
loaded on first use, so importing one channel does not import the others.
"""

from __future__ import annotations

from typing import Any

_KIT = {
    "Channel": "broadcaster.channels.base",
    "ChannelContext": "broadcaster.channels.base",
    "ChannelSettings": "broadcaster.channels.base",
    "ChannelSpec": "broadcaster.channels.base",
    "Post": "broadcaster.channels.base",
    "Recipient": "broadcaster.channels.base",
    "Report": "broadcaster.channels.base",
    "StatementChannel": "broadcaster.channels.base",
    "AudienceChannel": "broadcaster.channels.base",
    "StaffNotices": "broadcaster.channels.base",
    "tidy": "broadcaster.channels.base",
    "Receipt": "broadcaster.model",
    "Page": "broadcaster.render",
    "DeliveryError": "broadcaster.errors",
    "TransientDeliveryError": "broadcaster.errors",
    "PermanentDeliveryError": "broadcaster.errors",
    "InputError": "broadcaster.errors",
    "ApiSession": "broadcaster.channels.http_session",
}

__all__ = list(_KIT)


def __getattr__(name: str) -> Any:
    if name in _KIT:
        import importlib

        return getattr(importlib.import_module(_KIT[name]), name)
    raise AttributeError(f"module 'broadcaster.channels' has no attribute {name!r}")
