"""The ledger's interface: what the rest of broadcaster may ask of storage (see the package's
docstring for the promises), and what it gives when recording an update."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from broadcaster.model import (
    Delivery,
    DeliveryState,
    Incident,
    Receipt,
    Subscriber,
    SubscriptionRequest,
    Update,
)

#: What a ledger holds, table by table, in an order that keeps references valid: what
#: `export_rows` yields and `import_rows` takes, whatever the store.
TABLES: dict[str, tuple[str, ...]] = {
    "incidents": ("id", "created_at", "updated_at", "status", "draft"),
    "updates": ("id", "incident_id", "seq", "kind", "status", "impact", "components", "regions", "texts",
                "created_at", "next_update_at", "draft", "starts_at", "ends_at", "apology_waived",
                "discarded_at"),
    "deliveries": ("id", "update_id", "channel", "recipient", "locale", "state", "attempts", "remote_id",
                   "url", "error", "meta", "updated_at"),
    "subscribers": ("email", "locale", "components", "regions", "token", "active", "created_at",
                    "updated_at", "postcodes", "consent"),
    "subscription_requests": ("token_hash", "email", "locale", "components", "regions", "postcodes",
                              "consent", "created_at", "expires_at", "confirmed_at"),
    "hook_keys": ("key", "incident_id", "created_at", "auto_published"),
    "hook_signatures": ("signature", "seen_at"),
    "reminders": ("update_id", "sent_at"),
}
#: Columns added since exports began: a file written before them may lack them (None).
ADDED_COLUMNS: dict[str, frozenset[str]] = {"subscribers": frozenset({"consent"})}


class NewDelivery(NamedTuple):
    """A delivery to record as pending together with its update."""

    channel: str
    locale: str
    recipient: str = ""
    #: One of a mailing list (a subscriber of a channel with an audience), not a post: the
    #: ledger remembers each channel's kind from this (`channel_kinds`).
    listed: bool = False


class SubscriberSelection(NamedTuple):
    """One channel's listed deliveries for an update, written set-based from the subscribers
    table (one INSERT … SELECT, never a row through Python): every active subscriber who
    follows everything, or every active subscriber (`everyone`: an incident with no
    components or regions concerns them all, whatever they follow). Each in their own locale
    when it is one of `locales`, in `locales[0]` otherwise; only those whose locale is one of
    `sending` (the locales the channel's post was rendered in)."""

    channel: str
    locales: tuple[str, ...]
    sending: tuple[str, ...]
    everyone: bool


class DeliveryCount(NamedTuple):
    """How many of an update's recipients on one channel and locale are in one state."""

    update_id: str
    seq: int
    channel: str
    locale: str
    state: DeliveryState
    count: int
    #: The most attempts any of them took.
    attempts: int


class Claimed(NamedTuple):
    """One recipient of a claimed batch: what sending to them needs, and no more (a claim
    returns one per recipient of a mailing list; read back as whole `Delivery`s, with the
    update joined for each, a claim cost 4.9 µs a recipient rather than 3.0)."""

    id: int
    recipient: str
    locale: str
    #: Tried before, or left in doubt by a sender that stopped: a copy may already have
    #: reached them.
    resumed: bool
    #: Their subscription's token (their unsubscribe link carries it), read with the claim;
    #: None if they are not an active subscriber any more (they left after the update was
    #: recorded: not sent, recorded skipped).
    token: str | None = None


class OpenGroup(NamedTuple):
    """The deliveries of one update on one channel still pending or in flight: how many are
    free to claim (no lease, or an expired one) and how many a live sender holds."""

    incident_id: str
    update_id: str
    seq: int
    channel: str
    free: int
    leased: int


class Ledger(Protocol):
    #: (schema version before, after) when opened for writing: opening migrates the schema.
    migrated: tuple[int, int] | None

    def incident(self, incident_id: str) -> Incident:
        """The incident with all its updates; UnknownIncidentError when there is none."""
        ...

    def incidents(
        self, *, open_only: bool = False, include_drafts: bool = False, limit: int | None = None
    ) -> list[Incident]:
        """Incidents, most recently updated first."""
        ...

    def months(self) -> list[tuple[str, int]]:
        """("YYYY-MM", number of incidents that started then), newest first."""
        ...

    def incidents_of_month(self, month: str) -> list[Incident]:
        """Published incidents that started in `month`, newest first."""
        ...

    def record(self, update: Update, deliveries: Iterable[NewDelivery],
               selections: Sequence[SubscriberSelection] = ()) -> dict[str, int]:
        """Store the update and its pending deliveries in one transaction (`deliveries` is
        consumed a chunk at a time: it may stream from this ledger's subscribers), with those
        of each selection of subscribers; how many deliveries each mailing list got (counting
        them again afterwards took 0.08 s at 100,000)."""
        ...

    def publish(self, incident_id: str,
                deliveries: Iterable[NewDelivery] | Callable[[], Iterable[NewDelivery]],
                selections: Sequence[SubscriberSelection] = ()) -> list[Update]:
        """Turn the incident's drafts into published updates, recording their deliveries (for
        each draft: a callable is called once per draft, for a stream) and those of each
        selection of subscribers."""
        ...

    def incidents_with_drafts(self) -> list[Incident]:
        """Incidents with an unpublished draft waiting."""
        ...

    def revise_draft(self, update: Update) -> None:
        """Replace a draft update in place (same id and place in the incident)."""
        ...

    def discard_drafts(self, incident_id: str) -> list[str]:
        """Set the incident's unpublished drafts aside for the record; their ids."""
        ...

    def deliveries(
        self, *, incident_id: str | None = None, update_id: str | None = None,
        unfinished: bool = False, channels: Sequence[str] | None = None,
        excluded: Sequence[str] = (), limit: int | None = None, after_id: int | None = None,
    ) -> list[Delivery]:
        """Deliveries in the order they were recorded (of `channels` only, if given, and of no
        channel in `excluded`; at most `limit`, after the id `after_id` in id order). The
        callers name the mailing lists (`registry.mailing_lists()`, or `channel_kinds`)."""
        ...

    def each_delivery(self, *, incident_id: str | None = None, update_id: str | None = None,
                      channels: Sequence[str] | None = None) -> Iterator[Delivery]:
        """`deliveries`, streamed a chunk at a time in the order recorded."""
        ...

    def channels_of(self, incident_id: str) -> list[str]:
        """The channels the incident has deliveries on, sorted (without reading every
        recipient of a mailing list)."""
        ...

    def channel_kinds(self) -> dict[str, bool]:
        """Every channel deliveries were recorded for, and whether it is a mailing list (as
        the last `record` or `publish` said with `NewDelivery.listed`)."""
        ...

    def delivery_counts(self, *, channels: Sequence[str], incident_id: str | None = None,
                        update_id: str | None = None) -> list[DeliveryCount]:
        """Mailing lists in numbers: the deliveries of `channels` per (update, channel, locale,
        state)."""
        ...

    def unfinished_incidents(self) -> list[str]:
        """Ids of incidents with deliveries not yet sent."""
        ...

    def thread(self, incident_id: str, channel: str, before_seq: int) -> list[Receipt]:
        """Receipts of the incident's earlier sent posts on `channel`, oldest first."""
        ...

    def start_attempt(self, delivery_id: int) -> None:
        """Mark the delivery in flight and count the attempt, before the platform is called."""
        ...

    def mark_sent(self, delivery_id: int, receipt: Receipt) -> None: ...

    def mark_failed(self, delivery_id: int, error: str) -> None: ...

    def start_attempts(self, delivery_ids: Sequence[int], *, claimed: bool = False) -> None:
        """`start_attempt` for a batch, in one transaction. `claimed`: a later round of a
        claimed batch, whose first attempt (under the lease) is counted now as well."""
        ...

    def finish(self, sent: Sequence[tuple[int, Receipt]], failed: Sequence[tuple[int, str]],
               skipped: Sequence[tuple[int, str]] = ()) -> None:
        """Mark a batch of deliveries sent, failed or skipped, in one transaction. Sent and
        failed count their attempt (a claim counts none), unless `start_attempts` did. Skipped
        are claimed deliveries not sent after all (the recipient left the list since): nothing
        was tried, nothing is counted."""
        ...

    def first_receipts(self, incident_id: str, channel: str, before_seq: int,
                       recipients: Sequence[str]) -> dict[str, Receipt]:
        """Per recipient among `recipients`, the receipt of their first sent delivery of the incident."""
        ...

    def claim(self, owner: str, *, update_id: str, channel: str, limit: int, lease_seconds: float,
              states: Sequence[str] = ("pending", "in_flight"), after_id: int = 0) -> list[Claimed]:
        """Lease up to `limit` of the update's deliveries on `channel` that are in `states`, whose
        id is above `after_id`, and that nobody holds (no live lease covers them): a batch for
        this sender alone, in the order recorded (by id). Concurrent claimers get disjoint
        batches. The lease is one row per run of the batch, not a write to each delivery: they
        read as in flight while it lasts, and the attempt is counted when the result is. Each
        comes with the recipient's subscription token, read in the same statement: someone who
        leaves mid-fan-out is not sent the rest."""
        ...

    def renew(self, owner: str, lease_seconds: float, ids: Sequence[int]) -> int:
        """Extend `owner`'s leases over any of `ids` (the batches in hand), each whole; how many
        of `ids` they hold that are pending or in flight."""
        ...

    def release(self, owner: str, ids: Sequence[int]) -> None:
        """Give back `ids` from `owner`'s leases: free to claim again, and in doubt (a sender
        stopping early; its other deliveries stay held). A lease whose deliveries are all
        recorded is settled instead, and kept as who sent them (a batch done)."""
        ...

    def open_groups(self, channels: Sequence[str], *, update_id: str | None = None) -> list[OpenGroup]:
        """Updates with deliveries pending or in flight on `channels`, by incident and seq."""
        ...

    def sending(self, channel: str) -> list[str]:
        """The senders holding a live lease on any of `channel`'s lists now (this one among
        them while it holds one), sorted: those that share the relay's rate, each told which
        of them it is."""
        ...

    def senders(self, channel: str) -> dict[str, int]:
        """Per sender (`worker`s, commands), how many of `channel`'s deliveries it sent: each
        settled lease names who sent its run."""
        ...

    def incident_lock(self, incident_id: str, *, wait: float | None = None) -> AbstractContextManager[None]:
        """Hold the incident for this process; released even if the process is killed. Waits at
        most `wait` seconds (the store's default if None), then LockTimeoutError."""
        ...

    def service_lock(self, name: Literal["automation", "tick", "site"]) -> AbstractContextManager[None]:
        """Hold one kind of shared work (alert hooks, tick, the site's shared pages)."""
        ...

    # -- subscribers ---------------------------------------------------------------------

    def each_subscriber(self, *, active_only: bool = False,
                        filtered_only: bool = False) -> Iterator[Subscriber]:
        """Every subscriber on file (or the active ones), by address, read a chunk at a time
        (`filtered_only`: only those who follow some components, regions or postcodes, not
        everything). There is no call that returns them all at once: a million would not fit."""
        ...

    def subscriber_locales(self, *, unfiltered_only: bool = False) -> dict[str, int]:
        """How many active subscribers there are per locale (as stored): all of them, or only
        those who follow everything (`unfiltered_only`). Counted by the store, not in Python."""
        ...

    def subscriber(self, *, email: str | None = None, token: str | None = None) -> Subscriber | None:
        """The subscriber with this address or this token, active or not."""
        ...

    def subscribers_by_email(self, emails: Sequence[str]) -> dict[str, Subscriber]:
        """The subscribers on file among `emails`, by address."""
        ...

    def save_subscribers(self, added: Sequence[Subscriber], changed: Sequence[Subscriber]) -> None:
        """Insert `added` (with their tokens) and overwrite `changed` (signed up again), in one
        transaction."""
        ...

    def unsubscribe(self, *, email: str | None = None, token: str | None = None) -> Subscriber | None:
        """Make an active subscriber inactive (kept on file); who it was, or None."""
        ...

    def subscriber_counts(self) -> dict[str, int]:
        """How many subscribers are active and how many unsubscribed (one GROUP BY)."""
        ...

    def update_preferences(self, token: str, choice: Subscriber) -> bool:
        """Set an active subscriber's locale, components, regions and postcodes to `choice`'s;
        False if the token is unknown or its subscriber left (leaving is final until a new
        confirmed request)."""
        ...

    # -- self-service subscription ---------------------------------------------------------

    def add_subscription_request(self, token_hash: str, request: SubscriptionRequest) -> None:
        """Record an unconfirmed request under the hash of its link's token (and forget
        requests a week past their expiry)."""
        ...

    def subscription_request(self, token_hash: str) -> SubscriptionRequest | None:
        """The request whose link's token hashes to `token_hash`, confirmed or not."""
        ...

    def subscription_requests(self, *, pending_at: datetime | None = None) -> list[SubscriptionRequest]:
        """Every request on file, or those still waiting for confirmation at `pending_at`."""
        ...

    def confirm_subscription(self, token_hash: str, new_token: str, now: datetime) -> Subscriber | None:
        """Confirm the request once, before it expires: the address becomes an active
        subscriber with its choices and consent (keeping its token if it had one, else
        `new_token`). None if the request is unknown, already confirmed or expired."""
        ...

    def hit(self, key: str, *, limit: int, window: float, now: float) -> float | None:
        """Count one request against `key`'s fixed window of `window` seconds: None if within
        `limit`, else the seconds until the window ends (for Retry-After)."""
        ...

    def person(self, email: str) -> dict[str, list[dict[str, Any]]]:
        """Everything held about one address (for a data-protection request), table by table,
        without secrets (tokens)."""
        ...

    def erase_person(self, email: str, alias: str, rate_keys: Sequence[str]) -> dict[str, int]:
        """Erase one address: subscriber and requests deleted, unsent deliveries cancelled,
        sent ones kept for exactly-once under `alias`; rate-limit counters `rate_keys` dropped."""
        ...

    # -- automation ----------------------------------------------------------------------

    def hook_incident(self, key: str) -> str | None:
        """The incident an alert group (its key) started, if any."""
        ...

    def save_hook_key(self, key: str, incident_id: str, *, auto_published: bool) -> None:
        """Remember that an alert group started this incident (published with no person?)."""
        ...

    def auto_published_since(self, since: datetime) -> int:
        """How many alert groups were published with no person involved since `since`."""
        ...

    def remember_signature(self, signature: str, now: float, keep_seconds: float) -> bool:
        """Record a signed request's signature; False if it was seen in the last `keep_seconds`."""
        ...

    def forget_signature(self, signature: str) -> None:
        """Drop a signature (its request was refused, so it may be sent again)."""
        ...

    def claim_reminder(self, update_id: str, now: datetime) -> bool:
        """Claim the one reminder for the promise `update_id` made; False if already claimed."""
        ...

    def release_reminder(self, update_id: str) -> None:
        """Give a claimed reminder back (sending it failed): the next tick tries again."""
        ...

    def export_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every row the store holds, table by table, for `broadcaster state export`: read a
        chunk at a time, all as the ledger was at one moment."""
        ...

    def is_empty(self) -> bool:
        """Whether it holds no incident and no subscriber (an import needs an empty ledger)."""
        ...

    def import_rows(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, int]:
        """Insert exported rows, all or nothing, a chunk at a time as they come (a million never
        held at once); how many per table."""
        ...

    def ping(self) -> None:
        """Raise if the store cannot be read (the health check)."""
        ...

    def close(self) -> None: ...
