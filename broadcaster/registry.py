"""Which channels exist: those registered under the `broadcaster.channels` entry point.

Built-in channels register through the same entry point as third-party ones, so adding a
channel from another package takes one line in that package's pyproject.toml.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broadcaster.channels.base import Channel

ENTRY_POINT_GROUP = "broadcaster.channels"

_registered: dict[str, type[Channel]] = {}


@cache
def _from_entry_points() -> dict[str, type[Channel]]:
    found: dict[str, type[Channel]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found


def channels() -> dict[str, type[Channel]]:
    """Every known channel class by name; explicit registrations win over entry points."""
    return {**_from_entry_points(), **_registered}


def mailing_lists() -> list[str]:
    """The channels whose deliveries are a mailing list (one per subscriber: email), which
    reports count rather than list; every other channel's deliveries are posts."""
    return [name for name, channel in channels().items() if channel.has_audience]


def statement_channels() -> list[str]:
    """The channels that publish the official statement (the website): sent first, and the
    only ones a postmortem's revision goes to."""
    return [name for name, channel in channels().items() if channel.publishes_statement]


def register(channel: type[Channel]) -> type[Channel]:
    """Register a channel class in this process (tests, scripts); usable as a decorator."""
    _registered[channel.spec.name] = channel
    return channel


def unregister(name: str) -> None:
    """Forget a channel registered with `register`."""
    _registered.pop(name, None)
