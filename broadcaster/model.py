"""The incident model: what an incident, an update and a delivery are.

An incident is the sequence of its updates. Its current title, status, impact, components
and regions are those of its latest published update, so nothing is stored twice and an
update that escalates the impact or renames the incident simply says so.

The records are NamedTuples, immutable like frozen dataclasses but about eight times cheaper to
define (every command imports them, so `list` starts sooner) and cheaper to build (the ledger
builds one per recipient). `record._replace(field=value)` gives a changed copy. The module has
no `from __future__ import annotations`: NamedTuple compiles each string annotation into a
ForwardRef, a real type costs nothing.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from broadcaster.errors import InputError
from broadcaster.vocabulary import CLOSED, DeliveryState, Impact, Kind, Status

if TYPE_CHECKING:
    from broadcaster.places import Places

__all__ = [
    "Delivery", "DeliveryState", "Impact", "Incident", "Kind", "Receipt", "Status", "Subscriber",
    "SubscriptionRequest", "Text",
    "Update",
    "is_incident_id", "new_incident_id",
]


class Text(NamedTuple):
    """The words of one update in one locale. Message, guidance and apology are Markdown."""

    title: str
    message: str
    guidance: str = ""
    apology: str = ""


class Update(NamedTuple):
    """One published (or drafted) statement about an incident."""

    id: str
    incident_id: str
    seq: int
    kind: Kind
    status: Status
    impact: Impact
    components: tuple[str, ...]
    regions: tuple[str, ...]
    texts: Mapping[str, Text]
    created_at: datetime
    next_update_at: datetime | None = None
    draft: bool = False
    #: A planned maintenance's window (on every update of a maintenance).
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    #: A resolution of a major or critical incident that deliberately carries no apology.
    apology_waived: bool = False

    def text(self, locale: str) -> Text:
        """The words in `locale`; what that locale lacks is the default locale's (the first).

        The fallback is for readers; `message_rules` warns the sender about each one.
        """
        default = next(iter(self.texts.values()))
        own = self.texts.get(locale)
        if own is None or own is default:
            return default
        return Text(own.title or default.title, own.message or default.message,
                    own.guidance or default.guidance, own.apology or default.apology)


class Incident(NamedTuple):
    """An incident as the public sees it: the updates in order, oldest first."""

    id: str
    created_at: datetime
    updates: tuple[Update, ...]
    #: The highest number the ledger has given one of its updates, discarded drafts included:
    #: a discarded draft keeps its number (and its id) for the record.
    highest_seq: int = 0

    @property
    def next_seq(self) -> int:
        """The number of the next update: after every one recorded, discarded drafts too."""
        return max([self.highest_seq, *(u.seq for u in self.updates)]) + 1

    @property
    def published(self) -> tuple[Update, ...]:
        return tuple(u for u in self.updates if not u.draft)

    @property
    def timeline(self) -> tuple[Update, ...]:
        """The published updates told while it happened: everything but the postmortem."""
        return tuple(u for u in self.published if u.kind is not Kind.POSTMORTEM)

    @property
    def postmortems(self) -> tuple[Update, ...]:
        """Its published postmortem, first as published, then each revision (usually one)."""
        return tuple(u for u in self.published if u.kind is Kind.POSTMORTEM)

    @property
    def latest(self) -> Update:
        """The newest published update, or the newest draft if nothing is published yet."""
        published = self.published
        return published[-1] if published else self.updates[-1]

    @property
    def status(self) -> Status:
        return self.latest.status

    @property
    def impact(self) -> Impact:
        return self.latest.impact

    @property
    def components(self) -> tuple[str, ...]:
        return self.latest.components

    @property
    def regions(self) -> tuple[str, ...]:
        return self.latest.regions

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED

    @property
    def is_maintenance(self) -> bool:
        """Planned maintenance rather than an incident (its first update says so)."""
        return self.updates[0].kind is Kind.MAINTENANCE

    @property
    def is_draft(self) -> bool:
        return not self.published

    @property
    def starts_at(self) -> datetime | None:
        """A maintenance's window as it stands now (a reschedule moves it)."""
        return self.latest.starts_at

    @property
    def ends_at(self) -> datetime | None:
        return self.latest.ends_at

    @property
    def drafts(self) -> tuple[Update, ...]:
        """Updates waiting for a person to publish them (or discard them)."""
        return tuple(u for u in self.updates if u.draft)

    @property
    def max_impact(self) -> Impact:
        """The worst impact the incident has had (a resolution speaks to that)."""
        order = list(Impact)
        return max((u.impact for u in self.updates), key=order.index)

    @property
    def updated_at(self) -> datetime:
        return self.latest.created_at

    def title(self, locale: str) -> str:
        """The newest title written in `locale` (an update in one language keeps the others')."""
        for update in reversed(self.published or self.updates):
            if locale in update.texts and update.texts[locale].title:
                return update.texts[locale].title
        return self.latest.text(locale).title


class Receipt(NamedTuple):
    """What a platform answered for a delivered post."""

    remote_id: str | None = None
    url: str | None = None
    meta: Mapping[str, object] = MappingProxyType({})


class Delivery(NamedTuple):
    """One (update × channel × recipient) delivery as the ledger holds it."""

    id: int
    update_id: str
    incident_id: str
    channel: str
    recipient: str
    locale: str
    state: DeliveryState
    attempts: int
    remote_id: str | None
    url: str | None
    error: str | None
    meta: Mapping[str, object]
    updated_at: datetime


class Subscriber(NamedTuple):
    """Someone who gets the emails: their address, language, and what they follow (nothing
    means everything). The token is theirs alone: their unsubscribe link carries it."""

    email: str
    locale: str
    components: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    token: str = ""
    active: bool = True
    #: Postcodes followed: they stand for every region they lie in, configured now or later.
    postcodes: tuple[str, ...] = ()

    def follows(self, components: Sequence[str], regions: Sequence[str], places: "Places") -> bool:
        """Whether an incident touching these components and regions concerns them: one of
        their components in one of their places (see `places` for how regions nest)."""
        from broadcaster.places import touches_components

        return (touches_components(components, self.components)
                and places.touches(regions, self.regions, self.postcodes))


class SubscriptionRequest(NamedTuple):
    """Someone asked on the status page to follow `subscriber`'s choices (no token yet): it
    becomes a subscription only when the link sent to that address is confirmed."""

    subscriber: Subscriber
    #: What they agreed to: when, the words the form showed, the page, a keyed hash of the IP.
    consent: Mapping[str, object]
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None = None


#: Letters of incident ids: lowercase, no look-alikes (0/o, 1/l/i), safe in URLs and paths.
_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"


def new_incident_id() -> str:
    """A short, URL-safe, unguessable id (drafts are not public, so ids must not be guessable)."""
    import secrets

    from broadcaster.defaults import INCIDENT_ID_LENGTH

    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(INCIDENT_ID_LENGTH))


def is_incident_id(value: str) -> bool:
    """Whether `value` has the shape of an incident id (checked before it touches a path)."""
    from broadcaster.defaults import INCIDENT_ID_LENGTH

    return len(value) == INCIDENT_ID_LENGTH and all(c in _ID_ALPHABET for c in value)


def checked_id(incident_id: str) -> str:
    """The id, if it has the shape of one (before any ledger is opened)."""
    if not is_incident_id(incident_id):
        raise InputError(f"{incident_id!r} is not an incident id (see `broadcaster list`)")
    return incident_id
