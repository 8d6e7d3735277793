"""The ledger's logic in the SQL that SQLite and PostgreSQL both speak.

Every statement about incidents, deliveries, subscribers and automation is written once,
here, with `?` placeholders and portable SQL (ON CONFLICT, window functions). Times are ISO
8601 text in UTC and lists are JSON text, in both stores, so that one reading of a row serves
both. Each store's subpackage brings what differs: connecting, transactions, the schema and
its migrations, and locks (files beside SQLite, advisory locks in PostgreSQL).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import groupby, islice
from typing import Any, ClassVar, Literal

from broadcaster.errors import UnknownIncidentError
from broadcaster.ledger.interface import (
    TABLES,
    Claimed,
    DeliveryCount,
    NewDelivery,
    OpenGroup,
    SubscriberSelection,
)
from broadcaster.model import (
    Delivery,
    DeliveryState,
    Impact,
    Incident,
    Kind,
    Receipt,
    Status,
    Subscriber,
    SubscriptionRequest,
    Text,
    Update,
    is_incident_id,
)

#: Rows a streamed read or write takes at a time (memory stays flat whatever the list's size).
CHUNK = 5000
#: A subscriber who follows everything: no component, region or postcode chosen (stored as
#: `_names_json` writes an empty list). Any incident concerns them.
FOLLOWS_EVERYTHING = "components = '[]' AND regions = '[]' AND postcodes = '[]'"

_DELIVERY_COLUMNS = (
    "d.id, d.update_id, u.incident_id, d.channel, d.recipient, d.locale, d.state, d.attempts,"
    " d.remote_id, d.url, d.error, d.meta, d.updated_at"
)


#: What kind each channel is, as the senders recorded it with its deliveries: a mailing list
#: (one delivery per subscriber, counted in reports) or posts. `show` reads it so that it needs
#: no channel code (importing the channels costs more than the whole command). The same SQL in
#: both stores.
CHANNEL_KINDS = """
CREATE TABLE channel_kinds (
    channel         TEXT PRIMARY KEY,
    mailing_list    INTEGER NOT NULL
);
"""

#: One partial index over the deliveries not settled yet (pending, in flight or failed), in
#: both stores (SQLite's version 13, PostgreSQL's 5). It replaces two: one keyed by state over
#: the same rows and one by (update, channel, id) over the pending and in-flight ones. Each
#: was rewritten when a recipient was claimed and again when their result was recorded, a
#: WAL page and about 0.7 µs a recipient each time. A query uses it only when it says
#: UNFINISHED in these words (SQLite matches a partial index's condition by its text).
UNFINISHED = "state NOT IN ('sent', 'skipped')"
UNFINISHED_INDEX = f"""
DROP INDEX deliveries_unfinished;
DROP INDEX deliveries_open;
CREATE INDEX deliveries_unfinished ON deliveries (update_id, channel, id) WHERE {UNFINISHED};
"""

#: Leases, one per run of a mailing list a sender claimed, not one written into each delivery
#: (SQLite's version 14, PostgreSQL's 6; `{serial}` is each store's auto-numbered key). A claim
#: that marked every row of its batch in flight rewrote it, and recording the result rewrote it
#: again: 4-6 µs of CPU a message, a tenth of the whole fan-out. A lease covers the deliveries of
#: its (update, channel) numbered first_id to last_id; those not settled yet are in flight:
#: - live (lease_until not passed): its owner is sending them, nobody else may;
#: - run out or given back (lease_until passed, or ''): free again, and in doubt (a copy may
#:   have gone before the sender stopped), as a delivery left in flight always was;
#: - settled (settled_at): every one recorded by its owner; kept as who sent which run.
LEASES = """
CREATE TABLE leases (
    id          {serial} PRIMARY KEY,
    update_id   TEXT NOT NULL,
    channel     TEXT NOT NULL,
    first_id    BIGINT NOT NULL,
    last_id     BIGINT NOT NULL,
    owner       TEXT,
    lease_until TEXT NOT NULL,
    settled_at  TEXT
);
CREATE INDEX leases_open ON leases (update_id, channel, first_id) WHERE settled_at IS NULL;
CREATE INDEX leases_held ON leases (owner) WHERE settled_at IS NULL;
"""
#: A delivery inside a lease not settled: held, or left in doubt by a sender that stopped.
IN_LEASE = ("EXISTS (SELECT 1 FROM leases l WHERE l.update_id = d.update_id AND l.channel = d.channel"
            " AND l.first_id <= d.id AND l.last_id >= d.id AND l.settled_at IS NULL)")
#: A delivery's state as people read it: a pending one inside a lease is in flight.
STATE = f"CASE WHEN d.state = 'pending' AND {IN_LEASE} THEN 'in_flight' ELSE d.state END"
#: Not settled, and not failed (a failed delivery is free whatever lease covers it).
UNSETTLED = "state IN ('pending', 'in_flight')"

#: Schema for self-service subscription (the status page's form), the same in both stores
#: (SQLite's version 11, PostgreSQL's 3; PostgreSQL spells REAL as DOUBLE PRECISION).
SUBSCRIPTIONS = """
-- How a subscriber gave consent (JSON: when, what the form said, a keyed hash of the IP, when
-- they confirmed), NULL for people an operator added.
ALTER TABLE subscribers ADD COLUMN consent TEXT;
-- Asked on the status page, not yet confirmed from the mailbox (double opt-in). Only a hash of
-- the link's token is kept, so a copy of the ledger confirms nobody.
CREATE TABLE subscription_requests (
    token_hash      TEXT PRIMARY KEY,
    email           TEXT NOT NULL,
    locale          TEXT NOT NULL,
    components      TEXT NOT NULL,
    regions         TEXT NOT NULL,
    postcodes       TEXT NOT NULL,
    consent         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    confirmed_at    TEXT
);
CREATE INDEX subscription_requests_by_email ON subscription_requests (email);
-- Fixed-window counters (per IP, per address) shared by every `serve` on the ledger.
CREATE TABLE rate_limits (
    key             TEXT PRIMARY KEY,
    window_start    REAL NOT NULL,
    hits            INTEGER NOT NULL
)
"""


def _channels(where: list[str], params: list[object], channels: Sequence[str] | None,
              excluded: Sequence[str]) -> bool:
    """Narrow a delivery query to `channels` (None: any) and away from `excluded`; False when
    no channel is left to ask for (an empty IN list is not valid SQL everywhere)."""
    if channels is not None:
        if not channels:
            return False
        where.append(f"d.channel IN ({','.join('?' * len(channels))})")
        params.extend(channels)
    if excluded:
        where.append(f"d.channel NOT IN ({','.join('?' * len(excluded))})")
        params.extend(excluded)
    return True


def _scope(where: list[str], params: list[object], incident_id: str | None, update_id: str | None,
           update_column: str = "d.update_id") -> None:
    """Narrow a query of deliveries (`d`, joined to their update `u`) to an incident or update;
    a query of updates alone names the update by `u.id`."""
    if incident_id is not None:
        where.append("u.incident_id = ?")
        params.append(incident_id)
    if update_id is not None:
        where.append(f"{update_column} = ?")
        params.append(update_id)


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


#: A delivery's attempts once its result is recorded: one more, unless `start_attempts`
#: counted this one already (it marks the delivery in flight).
COUNTED = "attempts + CASE WHEN state = 'in_flight' THEN 0 ELSE 1 END"


def _runs(ids: Sequence[int], held: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """`ids` (in order) as (first, last) runs that leave out every id of `held`'s ranges they
    do not include: a lease over a run must cover none of another sender's deliveries."""
    from bisect import bisect_left, bisect_right  # here: `list` and `show` read, never claim

    cuts = set()
    for first, last in held:
        cuts.update((bisect_left(ids, first), bisect_right(ids, last)))  # where it would fall
        inside = range(bisect_left(ids, first), bisect_right(ids, last))
        cuts.update(inside)  # one of ours inside it (a failed delivery): a run of its own
        cuts.update(i + 1 for i in inside)
    runs, start = [], 0
    for cut in sorted(c for c in cuts if 0 < c < len(ids)):
        runs.append((ids[start], ids[cut - 1]))
        start = cut
    return [*runs, (ids[start], ids[-1])] if ids else []


def _lease(db: Any, update_id: str, channel: str, runs: Sequence[tuple[int, int]], owner: str,
           until: str) -> None:
    """`owner` holds these runs of the (update, channel) list until `until`."""
    db.executemany("INSERT INTO leases (update_id, channel, first_id, last_id, owner, lease_until)"
                   " VALUES (?, ?, ?, ?, ?, ?)", [(update_id, channel, *run, owner, until) for run in runs])


def _within(i: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(first <= i <= last for first, last in ranges)


def _in_chunks(values: Sequence[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """`values` a few hundred at a time, each chunk with its `?` marks for `IN (…)`: a batch of
    any size stays under the stores' limits on a statement's parameters."""
    for start in range(0, len(values), size):
        chunk = list(values[start:start + size])
        yield chunk, ",".join("?" * len(chunk))


class SQLLedger(ABC):
    """The ledger's logic in SQL that SQLite and PostgreSQL both run. A subclass brings the
    connection (`transaction`, `query`), the locks, and the one statement that differs."""

    #: `{column} IN` a list of ids passed as one parameter (see `_ids_param`): the column is
    #: named by whoever uses it (`d.id` where a join makes `id` ambiguous).
    IDS_IN: ClassVar[str]
    #: A statement that makes claims on one list take turns (its parameter names the list), run
    #: first in a claim's transaction: each then sees the leases of the one before. None where
    #: a write transaction is already one at a time (SQLite).
    CLAIM_LOCK: ClassVar[str | None] = None

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction, rolled back if anything raises; yields something with
        `execute(sql, params)` (a cursor with `rowcount`, `fetchone`) and `executemany`."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Rows of one read, `?` placeholders."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[None]:
        """The reads inside the block all see the ledger as it was when the first of them ran,
        whatever is written meanwhile (writers are not held up): a read of a whole ledger, a
        chunk at a time, that no command's write can split."""

    @abstractmethod
    def _lock(self, name: str, what: str, *, remove: bool = False,
              wait: float | None = None) -> AbstractContextManager[None]:
        """Hold `name` against every other holder until the block ends (or the process dies),
        waiting at most `wait` seconds (the store's default if None)."""

    @abstractmethod
    def _ids_param(self, ids: Sequence[int]) -> object:
        """The parameter that `IDS_IN` takes for these ids."""

    @abstractmethod
    def _has_table(self, name: str) -> bool:
        """Whether the store has this table (a read-only view of an older ledger may not)."""

    @abstractmethod
    def close(self) -> None: ...

    def _state(self) -> str:
        """How to read a delivery's state (`STATE`; as stored, in a read-only view of a ledger
        from before leases had their table)."""
        if not getattr(self, "_leases_known", False):
            if not self._has_table("leases"):
                return "d.state"
            self._leases_known = True
        return STATE

    # -- incidents and updates ---------------------------------------------------------

    def incident(self, incident_id: str) -> Incident:
        found = self._load([incident_id], include_drafts=True)
        if not found:
            if self.query("SELECT 1 FROM incidents WHERE id = ? AND status = 'discarded'", (incident_id,)):
                raise UnknownIncidentError(
                    f"incident {incident_id} was discarded (its drafts stay in the ledger for the record)"
                )
            raise UnknownIncidentError(
                f"no incident {incident_id!r} in the ledger (see `broadcaster list`)"
            )
        return found[0]

    def incidents(
        self, *, open_only: bool = False, include_drafts: bool = False, limit: int | None = None
    ) -> list[Incident]:
        where = ["status != 'discarded'"]
        if open_only:
            where.append("status NOT IN ('resolved', 'completed', 'cancelled')")
        if not include_drafts:
            where.append("draft = 0")
        sql = "SELECT id FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        ids = [row[0] for row in self.query(sql)]
        return self._load(ids, include_drafts=include_drafts)

    def incidents_with_drafts(self) -> list[Incident]:
        """Incidents with an unpublished draft waiting (never published, or a follow-up)."""
        ids = [r[0] for r in self.query(
            "SELECT DISTINCT incident_id FROM updates WHERE draft = 1 AND discarded_at IS NULL")]
        return self._load(ids, include_drafts=True)

    def months(self) -> list[tuple[str, int]]:
        """("YYYY-MM", number of published incidents that started then), newest first (UTC)."""
        return [(r[0], r[1]) for r in self.query(
            "SELECT substr(created_at, 1, 7) AS month, COUNT(*) FROM incidents WHERE draft = 0"
            " GROUP BY month ORDER BY month DESC"
        )]

    def incidents_of_month(self, month: str) -> list[Incident]:
        """Published incidents that started in `month` ("YYYY-MM", UTC), newest first."""
        ids = [r[0] for r in self.query(
            "SELECT id FROM incidents WHERE draft = 0 AND created_at >= ? AND created_at < ?"
            " ORDER BY created_at DESC", (month, month + "-99"),
        )]
        return self._load(ids, include_drafts=False)

    def _load(self, ids: list[str], *, include_drafts: bool) -> list[Incident]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        created = dict(self.query(f"SELECT id, created_at FROM incidents WHERE id IN ({marks})", ids))
        rows = self.query(
            "SELECT id, incident_id, seq, kind, status, impact, components, regions, texts,"
            " created_at, next_update_at, draft, starts_at, ends_at, apology_waived,"
            " discarded_at IS NOT NULL"
            f" FROM updates WHERE incident_id IN ({marks})"
            " ORDER BY seq",
            ids,
        )
        updates: dict[str, list[Update]] = {i: [] for i in created}
        highest: dict[str, int] = {}
        for row in rows:
            highest[row[1]] = max(highest.get(row[1], 0), row[2])
            if row[-1]:  # discarded: it keeps its number, and nothing else shows it
                continue
            update = _update_from_row(row[:-1])
            if include_drafts or not update.draft:
                updates[update.incident_id].append(update)
        return [
            Incident(i, datetime.fromisoformat(created[i]), tuple(updates[i]), highest.get(i, 0))
            for i in ids
            if i in created and updates[i]
        ]

    def record(self, update: Update, deliveries: Iterable[NewDelivery],
               selections: Sequence[SubscriberSelection] = ()) -> dict[str, int]:
        with self.transaction() as db:
            now = now_text()
            db.execute(
                "INSERT INTO incidents (id, created_at, updated_at, status, draft)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (update.incident_id, update.created_at.isoformat(), now, update.status, 1),
            )
            db.execute(
                "INSERT INTO updates (id, incident_id, seq, kind, status, impact, components,"
                " regions, texts, created_at, next_update_at, draft, starts_at, ends_at, apology_waived)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _update_to_row(update),
            )
            listed = self._insert_deliveries(db, update.id, deliveries, now, selections)
            self._refresh_incident(db, update.incident_id, now)
        return listed

    def publish(self, incident_id: str,
                deliveries: Iterable[NewDelivery] | Callable[[], Iterable[NewDelivery]],
                selections: Sequence[SubscriberSelection] = ()) -> list[Update]:
        each = deliveries if callable(deliveries) else lambda: deliveries
        with self.transaction() as db:
            now = now_text()
            ids = [r[0] for r in db.execute(
                "SELECT id FROM updates WHERE incident_id = ? AND draft = 1 AND discarded_at IS NULL"
                " ORDER BY seq",
                (incident_id,),
            )]
            for update_id in ids:
                db.execute("UPDATE updates SET draft = 0, created_at = ? WHERE id = ?", (now, update_id))
                self._insert_deliveries(db, update_id, each(), now, selections)
            self._refresh_incident(db, incident_id, now)
        incident = self.incident(incident_id)
        return [u for u in incident.updates if u.id in ids]

    def revise_draft(self, update: Update) -> None:
        """Replace a draft update's words, impact and scope (a re-firing alert, a person's
        revision); drafts only."""
        row = _update_to_row(update)
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE updates SET kind = ?, status = ?, impact = ?, components = ?, regions = ?,"
                " texts = ?, created_at = ?, next_update_at = ?, starts_at = ?, ends_at = ?,"
                " apology_waived = ? WHERE id = ? AND draft = 1 AND discarded_at IS NULL",
                (*row[3:11], *row[12:], update.id),
            ).rowcount
            if not changed:
                raise UnknownIncidentError(f"{update.id} is not a draft")
            db.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", (now_text(), update.incident_id))

    def discard_drafts(self, incident_id: str) -> list[str]:
        """Set an incident's unpublished drafts aside (kept for the record); their ids.

        An incident that was never published is then discarded as a whole: no list shows it.
        """
        with self.transaction() as db:
            now = now_text()
            ids = [r[0] for r in db.execute(
                "SELECT id FROM updates WHERE incident_id = ? AND draft = 1 AND discarded_at IS NULL"
                " ORDER BY seq", (incident_id,),
            )]
            db.execute("UPDATE updates SET discarded_at = ? WHERE incident_id = ? AND draft = 1"
                       " AND discarded_at IS NULL", (now, incident_id))
            published = db.execute("SELECT 1 FROM updates WHERE incident_id = ? AND draft = 0 LIMIT 1",
                                   (incident_id,)).fetchone()
            if published is None:
                db.execute("UPDATE incidents SET status = 'discarded', updated_at = ? WHERE id = ?",
                           (now, incident_id))
            else:
                db.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", (now, incident_id))
        return ids

    @staticmethod
    def _insert_deliveries(db: Any, update_id: str, deliveries: Iterable[NewDelivery], now: str,
                           selections: Sequence[SubscriberSelection] = ()) -> dict[str, int]:
        """Insert as they come, a chunk at a time (a mailing list's subscribers who follow only
        some components or places are streamed, never held in memory whole); then each
        selection of subscribers with one INSERT … SELECT, which the store runs without a row
        passing through Python (at 50,000 the counts and the record took 0.95 s through Python,
        0.30 s so). How many deliveries each mailing list got."""
        kinds: dict[str, bool] = {chosen.channel: True for chosen in selections}
        listed: dict[str, int] = {}

        def rows() -> Iterator[tuple[str, str, str, str, str]]:
            for d in deliveries:
                kinds[d.channel] = d.listed
                if d.listed:
                    listed[d.channel] = listed.get(d.channel, 0) + 1
                yield update_id, d.channel, d.recipient, d.locale, now

        each = rows()
        while chunk := list(islice(each, CHUNK)):
            db.executemany(
                "INSERT INTO deliveries (update_id, channel, recipient, locale, state, updated_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?)", chunk)
        for chosen in selections:
            known = ",".join("?" * len(chosen.locales))
            locale = f"CASE WHEN locale IN ({known}) THEN locale ELSE ? END"
            listed[chosen.channel] = listed.get(chosen.channel, 0) + db.execute(
                "INSERT INTO deliveries (update_id, channel, recipient, locale, state, updated_at)"
                f" SELECT ?, ?, email, {locale}, 'pending', ? FROM subscribers WHERE active = 1"
                f"{'' if chosen.everyone else ' AND ' + FOLLOWS_EVERYTHING}"
                f" AND {locale} IN ({','.join('?' * len(chosen.sending))}) ORDER BY email",
                (update_id, chosen.channel, *chosen.locales, chosen.locales[0], now, *chosen.locales,
                 chosen.locales[0], *chosen.sending)).rowcount
        db.executemany(
            "INSERT INTO channel_kinds (channel, mailing_list) VALUES (?, ?)"
            " ON CONFLICT (channel) DO UPDATE SET mailing_list = excluded.mailing_list",
            [(name, int(kind)) for name, kind in kinds.items()])
        return listed

    @staticmethod
    def _refresh_incident(db: Any, incident_id: str, now: str) -> None:
        latest = db.execute(
            "SELECT status FROM updates WHERE incident_id = ? AND draft = 0"
            " ORDER BY seq DESC LIMIT 1",
            (incident_id,),
        ).fetchone()
        if latest is None:
            db.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", (now, incident_id))
        else:
            db.execute(
                "UPDATE incidents SET updated_at = ?, status = ?, draft = 0 WHERE id = ?",
                (now, latest[0], incident_id),
            )

    # -- deliveries ----------------------------------------------------------------------

    def deliveries(
        self, *, incident_id: str | None = None, update_id: str | None = None,
        unfinished: bool = False, channels: Sequence[str] | None = None,
        excluded: Sequence[str] = (), limit: int | None = None, after_id: int | None = None,
    ) -> list[Delivery]:
        where, params = [], []
        if after_id is not None:
            where.append("d.id > ?")
            params.append(after_id)
        if not _channels(where, params, channels, excluded):
            return []
        _scope(where, params, incident_id, update_id)
        if unfinished:
            where.append(f"d.{UNFINISHED}")
        columns = _DELIVERY_COLUMNS.replace("d.state", self._state())
        sql = f"SELECT {columns} FROM deliveries d JOIN updates u ON u.id = d.update_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY d.id" if after_id is not None else " ORDER BY u.seq, d.id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_delivery_from_row(r) for r in self.query(sql, params)]

    def each_delivery(self, *, incident_id: str | None = None, update_id: str | None = None,
                      channels: Sequence[str] | None = None) -> Iterator[Delivery]:
        """`deliveries` a chunk at a time, in the order recorded (keyset by id): a mailing list
        of a million, listed without holding it."""
        after = 0
        while chunk := self.deliveries(incident_id=incident_id, update_id=update_id, channels=channels,
                                       limit=CHUNK, after_id=after):
            yield from chunk
            after = chunk[-1].id

    def channels_of(self, incident_id: str) -> list[str]:
        """The channels the incident's updates were recorded for, each update's read by leaps
        along the (update, channel, recipient) index: a mailing list of a million costs one
        step, not a million rows."""
        found: set[str] = set()
        for (update_id,) in self.query("SELECT id FROM updates WHERE incident_id = ?", (incident_id,)):
            rows = self.query(
                "WITH RECURSIVE seen (channel) AS ("
                " SELECT MIN(channel) FROM deliveries WHERE update_id = ?"
                " UNION ALL SELECT (SELECT MIN(d.channel) FROM deliveries d"
                " WHERE d.update_id = ? AND d.channel > seen.channel)"
                " FROM seen WHERE seen.channel IS NOT NULL)"
                " SELECT channel FROM seen WHERE channel IS NOT NULL", (update_id, update_id))
            found.update(r[0] for r in rows)
        return sorted(found)

    def channel_kinds(self) -> dict[str, bool]:
        if not self._has_table("channel_kinds"):  # read-only, from before they were kept
            return {}
        return {r[0]: bool(r[1]) for r in self.query("SELECT channel, mailing_list FROM channel_kinds")}

    def delivery_counts(self, *, channels: Sequence[str], incident_id: str | None = None,
                        update_id: str | None = None) -> list[DeliveryCount]:
        """Mailing lists in numbers: per (update, channel, locale, state), how many recipients
        and the most attempts any of them took (GROUP BY, whatever the size of the list).

        Each update's list on each channel is grouped on its own: grouped all at once, with the
        update's id and number and the channel in every row SQLite sorts to group them, a list of
        a million took 1.35–1.58 s to count (`show`, and the report after a send), and now takes
        0.73 s."""
        where: list[str] = []
        params: list[object] = []
        _scope(where, params, incident_id, update_id, update_column="u.id")
        scope = f" WHERE {' AND '.join(where)}" if where else ""
        counts: list[DeliveryCount] = []
        for listed, seq in self.query(f"SELECT u.id, u.seq FROM updates u{scope}", params):
            for channel in dict.fromkeys(channels):
                counts += [DeliveryCount(listed, seq, channel, r[0], DeliveryState(r[1]), int(r[2]),
                                         int(r[3])) for r in self.query(
                               "SELECT locale, state, COUNT(*), MAX(attempts) FROM ("
                               f"SELECT d.locale, {self._state()} AS state, d.attempts FROM deliveries d"
                               " WHERE d.update_id = ? AND d.channel = ?) AS counted GROUP BY locale, state",
                               (listed, channel))]
        return sorted(counts, key=lambda c: (c.seq, c.channel, c.locale, c.state.value))

    def unfinished_incidents(self) -> list[str]:
        rows = self.query(
            "SELECT DISTINCT u.incident_id FROM deliveries d JOIN updates u ON u.id = d.update_id"
            f" WHERE d.{UNFINISHED} ORDER BY u.incident_id"
        )
        return [r[0] for r in rows]

    def thread(self, incident_id: str, channel: str, before_seq: int) -> list[Receipt]:
        rows = self.query(
            "SELECT d.remote_id, d.url, d.meta FROM deliveries d JOIN updates u ON u.id = d.update_id"
            " WHERE u.incident_id = ? AND d.channel = ? AND u.seq < ? AND d.state = 'sent'"
            " ORDER BY u.seq, d.id",
            (incident_id, channel, before_seq),
        )
        return [Receipt(r[0], r[1], _meta(r[2])) for r in rows]

    def start_attempt(self, delivery_id: int) -> None:
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1,"
                " updated_at = ? WHERE id = ? AND state NOT IN ('sent', 'skipped')",
                (now_text(), delivery_id),
            ).rowcount
        if not changed:
            # Only possible if something bypassed the incident lock; refuse to send twice.
            raise RuntimeError(f"delivery {delivery_id} is already sent")

    def mark_sent(self, delivery_id: int, receipt: Receipt) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'sent', remote_id = ?, url = ?, meta = ?,"
                " error = NULL, updated_at = ? WHERE id = ?",
                (answered(receipt.remote_id), answered(receipt.url), meta_text(receipt.meta), now_text(),
                 delivery_id),
            )

    def start_attempts(self, delivery_ids: Sequence[int], *, claimed: bool = False) -> None:
        """`start_attempt` for many deliveries in one transaction (a mailing list's batch).
        `claimed`: they went once already under a claim's lease, an attempt only their result
        would have counted; it is counted now too (unless a round before marked them)."""
        earlier = "CASE WHEN state = 'in_flight' THEN 1 ELSE 2 END" if claimed else "1"
        with self.transaction() as db:
            # One set-based statement (the ids as one parameter) rather than one per recipient.
            changed = db.execute(
                f"UPDATE deliveries SET state = 'in_flight', updated_at = ?, attempts = attempts + {earlier}"
                f" WHERE {self.IDS_IN.format(column='id')} AND state NOT IN ('sent', 'skipped')",
                (now_text(), self._ids_param(delivery_ids)),
            ).rowcount
            if changed != len(delivery_ids):  # raised inside: the others are not marked either
                raise RuntimeError("some deliveries of the batch are already sent")

    def finish(self, sent: Sequence[tuple[int, Receipt]], failed: Sequence[tuple[int, str]],
               skipped: Sequence[tuple[int, str]] = ()) -> None:
        """Record many outcomes in one transaction: one fsync for a whole batch of emails. The
        attempt is counted here (a claim writes no delivery), unless `start_attempts` did."""
        with self.transaction() as db:
            now = now_text()
            db.executemany(
                "UPDATE deliveries SET state = 'sent', remote_id = ?, url = ?, meta = ?,"
                f" error = NULL, updated_at = ?, attempts = {COUNTED} WHERE id = ?",
                [(answered(r.remote_id), answered(r.url), meta_text(r.meta), now, i) for i, r in sent],
            )
            db.executemany(
                f"UPDATE deliveries SET state = 'failed', error = ?, updated_at = ?, attempts = {COUNTED}"
                " WHERE id = ?",
                [(answered(error), now, i) for i, error in failed],
            )
            db.executemany(  # not attempted: the subscriber left before
                "UPDATE deliveries SET state = 'skipped', error = ?, updated_at = ? WHERE id = ?",
                [(answered(why), now, i) for i, why in skipped],
            )

    def first_receipts(self, incident_id: str, channel: str, before_seq: int,
                       recipients: Sequence[str]) -> dict[str, Receipt]:
        """Per recipient (of these: a batch), the receipt of their first sent delivery of the
        incident (email threads).

        The earlier updates are looked through in order, each for the recipients not found yet:
        after the first, that is usually nobody. One query over all of them, numbering each
        recipient's deliveries by update (a window) to keep the first, sorted them in a temporary
        B-tree: 4.6 µs a recipient rather than 2.2 (timed alone at 100,000), 6.9 s of an
        `update` to a million."""
        found: dict[str, Receipt] = {}
        earlier = self.query("SELECT id FROM updates WHERE incident_id = ? AND seq < ? ORDER BY seq",
                             (incident_id, before_seq))
        left = list(recipients)
        for (update_id,) in earlier:
            for chunk, marks in _in_chunks(left):
                found.update((r[0], Receipt(r[1], r[2], _meta(r[3]))) for r in self.query(
                    "SELECT recipient, remote_id, url, meta FROM deliveries WHERE update_id = ?"
                    f" AND channel = ? AND recipient IN ({marks}) AND state = 'sent'",
                    (update_id, channel, *chunk)))
            left = [r for r in left if r not in found]
            if not left:
                break
        return found

    def mark_failed(self, delivery_id: int, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                (answered(error), now_text(), delivery_id),
            )

    # -- leases: a mailing list shared by several senders ---------------------------------

    def claim(self, owner: str, *, update_id: str, channel: str, limit: int, lease_seconds: float,
              states: Sequence[str] = ("pending", "in_flight"), after_id: int = 0) -> list[Claimed]:
        now = now_text()
        with self.transaction() as db:
            if self.CLAIM_LOCK:
                db.execute(self.CLAIM_LOCK, (f"claim {update_id} {channel}",))
            leases = db.execute(
                "SELECT id, first_id, last_id, lease_until FROM leases WHERE update_id = ? AND channel = ?"
                " AND settled_at IS NULL ORDER BY first_id", (update_id, channel)).fetchall()
            live = [(first, last) for _, first, last, until in leases if until >= now]
            doubt = self._settle_doubts(db, update_id, channel,
                                        [(i, first, last) for i, first, last, until in leases if until < now])
            # What sending needs, read and not written: the lease below is one row for the batch.
            rows = db.execute(
                "SELECT id, recipient, locale, attempts > 0 OR state = 'in_flight', state,"
                # The token of each who is still subscribed (timed alone: 0.7 µs a recipient here,
                # 1.4 in a query of its own for each batch, which took 1.7–1.9 s of a million).
                " (SELECT token FROM subscribers s WHERE s.email = deliveries.recipient AND s.active = 1)"
                " FROM deliveries"
                f" WHERE update_id = ? AND channel = ? AND id > ? AND {UNFINISHED}"
                f" AND state IN ({','.join('?' * len(states))})"
                # Held row by row by a sender from before leases had a table of their own.
                " AND (lease_until IS NULL OR lease_until < ? OR state = 'failed')"
                # A lease binds only what its holder has not settled yet: a failed delivery is free.
                + " AND (state = 'failed' OR id NOT BETWEEN ? AND ?)" * len(live)
                + " ORDER BY id LIMIT ?",
                (update_id, channel, after_id, *states, now, *(n for run in live for n in run), limit),
            ).fetchall()
            if not rows:
                return []
            ids = [r[0] for r in rows]
            if doubt and (doubted := [r[0] for r in rows if r[4] == "pending" and _within(r[0], doubt)]):
                # Their sender stopped after it may have sent them: that attempt counts.
                db.execute("UPDATE deliveries SET attempts = attempts + 1"
                           f" WHERE {self.IDS_IN.format(column='id')}", (self._ids_param(doubted),))
            if flying := [r[0] for r in rows if r[4] == "in_flight"]:
                # Left in flight row by row (an interrupted second round, or a sender from before
                # leases had their table): now pending under this lease, in doubt all the same.
                db.execute("UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL"
                           f" WHERE {self.IDS_IN.format(column='id')}", (self._ids_param(flying),))
            _lease(db, update_id, channel, _runs(ids, live), owner, _later(lease_seconds))
        if doubt:
            return [Claimed(i, recipient, locale, bool(tried) or _within(i, doubt), token)
                    for i, recipient, locale, tried, _, token in rows]
        return [Claimed(i, recipient, locale, bool(tried), token)
                for i, recipient, locale, tried, _, token in rows]

    def _settle_doubts(self, db: Any, update_id: str, channel: str,
                       leases: Sequence[tuple[int, int, int]]) -> list[tuple[int, int]]:
        """Of leases that ran out or were given back, forget those that cover nothing unsettled
        any more (another sender finished it); the (first, last) of those still in doubt."""
        doubt, done = [], []
        for lease_id, first, last in leases:
            unsettled = db.execute(
                f"SELECT 1 FROM deliveries WHERE update_id = ? AND channel = ? AND {UNFINISHED}"
                f" AND {UNSETTLED} AND id BETWEEN ? AND ? LIMIT 1",
                (update_id, channel, first, last)).fetchall()
            if unsettled:
                doubt.append((first, last))
            else:
                done.append((lease_id,))
        db.executemany("DELETE FROM leases WHERE id = ?", done)
        return doubt

    def _held(self, db: Any, owner: str, ids: Sequence[int]) -> list[tuple]:
        """`owner`'s leases (not settled) that cover any of `ids`: (id, update, channel, first,
        last, until). A sender holds a lease or two at a time; its ids are found by bisecting."""
        from bisect import bisect_left, bisect_right

        wanted = sorted(ids)
        return [lease for lease in db.execute(
            "SELECT id, update_id, channel, first_id, last_id, lease_until FROM leases"
            " WHERE owner = ? AND settled_at IS NULL", (owner,)).fetchall()
            if bisect_right(wanted, lease[4]) > bisect_left(wanted, lease[3])]

    def renew(self, owner: str, lease_seconds: float, ids: Sequence[int]) -> int:
        with self.transaction() as db:
            held = self._held(db, owner, ids)
            db.executemany("UPDATE leases SET lease_until = ? WHERE id = ?",
                           [(_later(lease_seconds), lease[0]) for lease in held])
            if not held:
                return 0
            return db.execute(
                f"SELECT COUNT(*) FROM deliveries WHERE {self.IDS_IN.format(column='id')} AND {UNSETTLED}"
                " AND (" + " OR ".join(["id BETWEEN ? AND ?"] * len(held)) + ")",
                (self._ids_param(ids), *(n for lease in held for n in lease[3:5]))).fetchone()[0]

    def release(self, owner: str, ids: Sequence[int]) -> None:
        now = now_text()
        with self.transaction() as db:
            given = set(ids)
            for lease_id, update_id, channel, first, last, until in self._held(db, owner, ids):
                unsettled = [r[0] for r in db.execute(
                    f"SELECT id FROM deliveries WHERE update_id = ? AND channel = ? AND {UNFINISHED}"
                    f" AND {UNSETTLED} AND id BETWEEN ? AND ? ORDER BY id",
                    (update_id, channel, first, last)).fetchall()]
                if not unsettled:  # every one recorded: the lease is history (who sent the run)
                    db.execute("UPDATE leases SET settled_at = ? WHERE id = ?", (now, lease_id))
                    continue
                back = [i for i in unsettled if i in given]
                if not back:
                    continue
                # Those given back are free and in doubt; the rest stay held, in runs around them.
                db.execute("UPDATE leases SET lease_until = '', owner = NULL WHERE id = ?", (lease_id,))
                kept = [i for i in unsettled if i not in given]
                _lease(db, update_id, channel, _runs(kept, [(i, i) for i in back]), owner, until)

    def open_groups(self, channels: Sequence[str], *, update_id: str | None = None) -> list[OpenGroup]:
        if not channels:
            return []
        now = now_text()
        where = (f"d.{UNFINISHED} AND d.{UNSETTLED}"
                 f" AND d.channel IN ({','.join('?' * len(channels))})")
        params: list[object] = [*channels]
        if update_id is not None:
            where += " AND d.update_id = ?"
            params.append(update_id)
        rows = self.query(
            "SELECT u.incident_id, d.update_id, u.seq, d.channel,"
            " SUM(CASE WHEN d.lease_until IS NULL OR d.lease_until < ? THEN 1 ELSE 0 END), COUNT(*)"
            f" FROM deliveries d JOIN updates u ON u.id = d.update_id WHERE {where}"
            " GROUP BY u.incident_id, d.update_id, u.seq, d.channel ORDER BY u.incident_id, u.seq, d.channel",
            [now, *params],
        )
        # What live leases hold, counted over their runs (a handful of leases, not every row).
        held = dict.fromkeys([(r[1], r[3]) for r in rows], 0)
        if held:
            for list_id, channel, count in self.query(
                    "SELECT l.update_id, l.channel, COUNT(*) FROM leases l JOIN deliveries d"
                    " ON d.update_id = l.update_id AND d.channel = l.channel"
                    " AND d.id BETWEEN l.first_id AND l.last_id"
                    f" WHERE l.settled_at IS NULL AND l.lease_until >= ? AND {where}"
                    " GROUP BY l.update_id, l.channel", [now, *params]):
                held[list_id, channel] = int(count)
        groups = []
        for incident_id, list_id, seq, channel, unleased, count in rows:
            free = max(int(unleased) - held[list_id, channel], 0)
            groups.append(OpenGroup(incident_id, list_id, seq, channel, free, int(count) - free))
        return groups

    def sending(self, channel: str) -> list[str]:
        return [owner for (owner,) in self.query(
            "SELECT DISTINCT owner FROM leases WHERE channel = ? AND settled_at IS NULL"
            " AND owner IS NOT NULL AND lease_until > ? ORDER BY owner", (channel, now_text()))]

    def senders(self, channel: str) -> dict[str, int]:
        """Per sender, how many of `channel`'s deliveries it sent, as its settled leases say."""
        return {owner: int(count) for owner, count in self.query(
            "SELECT l.owner, COUNT(*) FROM leases l JOIN deliveries d ON d.update_id = l.update_id"
            " AND d.channel = l.channel AND d.id BETWEEN l.first_id AND l.last_id"
            " WHERE l.channel = ? AND l.settled_at IS NOT NULL AND d.state = 'sent' GROUP BY l.owner",
            (channel,))}

    # -- locking -------------------------------------------------------------------------

    @contextmanager
    def incident_lock(self, incident_id: str, *, wait: float | None = None) -> Iterator[None]:
        if not is_incident_id(incident_id):
            # The id names a lock (a file, for SQLite): refuse anything that is not an id.
            raise UnknownIncidentError(f"{incident_id!r} is not an incident id")
        with self._lock(incident_id, f"incident {incident_id}", remove=True, wait=wait):
            yield

    @contextmanager
    def service_lock(self, name: Literal["automation", "tick", "site"]) -> Iterator[None]:
        """Serialise one kind of work across processes: alert hooks, tick, or writing the
        status site's shared pages (index, feeds, JSON), which every incident touches."""
        with self._lock(name, f"the {name} lock"):
            yield

    # -- subscribers ---------------------------------------------------------------------

    def each_subscriber(self, *, active_only: bool = False,
                        filtered_only: bool = False) -> Iterator[Subscriber]:
        """A chunk at a time (keyset by address): a million, never all at once."""
        where = "WHERE active = 1 AND email > ?" if active_only else "WHERE email > ?"
        if filtered_only:
            where += f" AND NOT ({FOLLOWS_EVERYTHING})"
        after = ""
        while chunk := self._subscribers(f"{where} ORDER BY email LIMIT {CHUNK}", [after]):
            yield from chunk
            after = chunk[-1].email

    def subscriber_locales(self, *, unfiltered_only: bool = False) -> dict[str, int]:
        where = f"active = 1 AND {FOLLOWS_EVERYTHING}" if unfiltered_only else "active = 1"
        return dict(self.query(f"SELECT locale, COUNT(*) FROM subscribers WHERE {where} GROUP BY locale"))

    def subscriber(self, *, email: str | None = None, token: str | None = None) -> Subscriber | None:
        column, value = ("email", email) if email is not None else ("token", token)
        found = self._subscribers(f"WHERE {column} = ?", [value])
        return found[0] if found else None

    def subscribers_by_email(self, emails: Sequence[str]) -> dict[str, Subscriber]:
        found: dict[str, Subscriber] = {}
        for chunk, marks in _in_chunks(emails):
            found.update((s.email, s) for s in self._subscribers(f"WHERE email IN ({marks})", chunk))
        return found

    def save_subscribers(self, added: Sequence[Subscriber], changed: Sequence[Subscriber]) -> None:
        with self.transaction() as db:
            now = now_text()
            db.executemany(
                "INSERT INTO subscribers (email, locale, components, regions, postcodes, token,"
                " active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                [(s.email, s.locale, _names_json(s.components), _names_json(s.regions),
                  _names_json(s.postcodes), s.token, now, now) for s in added],
            )
            db.executemany(
                "UPDATE subscribers SET locale = ?, components = ?, regions = ?, postcodes = ?,"
                " active = 1, updated_at = ? WHERE email = ?",
                [(s.locale, _names_json(s.components), _names_json(s.regions), _names_json(s.postcodes),
                  now, s.email) for s in changed],
            )

    def unsubscribe(self, *, email: str | None = None, token: str | None = None) -> Subscriber | None:
        column, value = ("email", email) if email is not None else ("token", token)
        with self.transaction() as db:
            found = self._subscribers(f"WHERE {column} = ? AND active = 1", [value])
            if found:
                db.execute(f"UPDATE subscribers SET active = 0, updated_at = ? WHERE {column} = ?",
                           (now_text(), value))
        return found[0] if found else None

    def subscriber_counts(self) -> dict[str, int]:
        rows = self.query("SELECT active, COUNT(*) FROM subscribers GROUP BY active")
        counts = {"active": 0, "unsubscribed": 0}
        for active, count in rows:
            counts["active" if active else "unsubscribed"] = count
        return counts

    def update_preferences(self, token: str, choice: Subscriber) -> bool:
        with self.transaction() as db:
            return db.execute(
                "UPDATE subscribers SET locale = ?, components = ?, regions = ?, postcodes = ?,"
                " updated_at = ? WHERE token = ? AND active = 1",
                (choice.locale, _names_json(choice.components), _names_json(choice.regions),
                 _names_json(choice.postcodes), now_text(), token)).rowcount == 1

    # -- self-service subscription: requests, consent, rate limits -----------------------

    def add_subscription_request(self, token_hash: str, request: SubscriptionRequest) -> None:
        s = request.subscriber
        with self.transaction() as db:
            # Links long past their expiry say nothing useful any more: keep the table small.
            forget = request.created_at - (request.expires_at - request.created_at) - timedelta(days=7)
            db.execute("DELETE FROM subscription_requests WHERE expires_at < ?", (_iso(forget),))
            db.execute(
                "INSERT INTO subscription_requests (token_hash, email, locale, components, regions,"
                " postcodes, consent, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (token_hash, s.email, s.locale, _names_json(s.components), _names_json(s.regions),
                 _names_json(s.postcodes), json.dumps(dict(request.consent), sort_keys=True),
                 _iso(request.created_at), _iso(request.expires_at)))

    def subscription_request(self, token_hash: str) -> SubscriptionRequest | None:
        found = self._requests("WHERE token_hash = ?", [token_hash])
        return found[0] if found else None

    def subscription_requests(self, *, pending_at: datetime | None = None) -> list[SubscriptionRequest]:
        if pending_at is None:
            return self._requests("ORDER BY email, created_at")
        return self._requests("WHERE confirmed_at IS NULL AND expires_at > ? ORDER BY email, created_at",
                              [_iso(pending_at)])

    def confirm_subscription(self, token_hash: str, new_token: str, now: datetime) -> Subscriber | None:
        with self.transaction() as db:
            # The UPDATE decides, so two clicks at once confirm once.
            if db.execute("UPDATE subscription_requests SET confirmed_at = ? WHERE token_hash = ?"
                          " AND confirmed_at IS NULL AND expires_at > ?",
                          (_iso(now), token_hash, _iso(now))).rowcount != 1:
                return None
            (request,) = self._requests("WHERE token_hash = ?", [token_hash], db)
            s = request.subscriber
            consent = json.dumps({**request.consent, "confirmed_at": _iso(now)}, sort_keys=True)
            db.execute(
                "INSERT INTO subscribers (email, locale, components, regions, postcodes, token, active,"
                " created_at, updated_at, consent) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)"
                " ON CONFLICT (email) DO UPDATE SET locale = excluded.locale,"
                " components = excluded.components, regions = excluded.regions,"
                " postcodes = excluded.postcodes, active = 1, updated_at = excluded.updated_at,"
                " consent = excluded.consent",
                (s.email, s.locale, _names_json(s.components), _names_json(s.regions),
                 _names_json(s.postcodes), new_token, _iso(now), _iso(now), consent))
            row = db.execute("SELECT token FROM subscribers WHERE email = ?", (s.email,)).fetchone()
        return Subscriber(s.email, s.locale, s.components, s.regions, row[0], True, s.postcodes)

    def hit(self, key: str, *, limit: int, window: float, now: float) -> float | None:
        with self.transaction() as db:
            db.execute("DELETE FROM rate_limits WHERE window_start < ?", (now - 2 * 86_400,))
            # One statement counts the hit and starts a new window when the last one is over,
            # so concurrent requests (several `serve`s on one ledger) never both get the last slot.
            start, hits = db.execute(
                "INSERT INTO rate_limits (key, window_start, hits) VALUES (?, ?, 1)"
                " ON CONFLICT (key) DO UPDATE SET"
                " hits = CASE WHEN rate_limits.window_start <= ? THEN 1 ELSE rate_limits.hits + 1 END,"
                " window_start = CASE WHEN rate_limits.window_start <= ? THEN excluded.window_start"
                " ELSE rate_limits.window_start END RETURNING window_start, hits",
                (key, now, now - window, now - window)).fetchone()
        return None if hits <= limit else max(start + window - now, 1.0)

    def person(self, email: str) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for table, where in (("subscribers", "email = ?"), ("subscription_requests", "email = ?"),
                             ("deliveries", "recipient = ?")):
            columns = [c for c in TABLES[table] if c not in ("token", "token_hash", "meta")]
            rows = self.query(f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"
                              f" ORDER BY {columns[0]}", (email,))
            found[table] = [dict(zip(columns, row, strict=True)) for row in rows]
        return found

    def erase_person(self, email: str, alias: str, rate_keys: Sequence[str]) -> dict[str, int]:
        now = now_text()
        with self.transaction() as db:
            counts = {
                "subscribers": db.execute("DELETE FROM subscribers WHERE email = ?", (email,)).rowcount,
                "subscription_requests": db.execute(
                    "DELETE FROM subscription_requests WHERE email = ?", (email,)).rowcount,
                # Not sent yet: never will be. Sent: the record stays (exactly once depends on
                # it), under an alias that names nobody.
                "deliveries_cancelled": db.execute(
                    "UPDATE deliveries SET state = 'skipped', error = 'the recipient was erased',"
                    " lease_owner = NULL, lease_until = NULL, updated_at = ?"
                    " WHERE recipient = ? AND state IN ('pending', 'in_flight', 'failed')",
                    (now, email)).rowcount,
                "deliveries": db.execute(
                    "UPDATE deliveries SET recipient = ?, meta = '{}', error = REPLACE(error, ?, ?)"
                    " WHERE recipient = ?", (alias, email, alias, email)).rowcount,
            }
            db.executemany("DELETE FROM rate_limits WHERE key = ?", [(k,) for k in rate_keys])
        return counts

    def _requests(self, where: str, params: Sequence[object] = (),
                  db: Any = None) -> list[SubscriptionRequest]:
        sql = ("SELECT email, locale, components, regions, postcodes, consent, created_at, expires_at,"
               f" confirmed_at FROM subscription_requests {where}")
        rows = db.execute(sql, params).fetchall() if db is not None else self.query(sql, params)
        return [SubscriptionRequest(Subscriber(r[0], r[1], _names(r[2]), _names(r[3]), postcodes=_names(r[4]),
                                               active=False),
                                    json.loads(r[5]), _when(r[6]), _when(r[7]), _when(r[8]))  # type: ignore[arg-type]
                for r in rows]

    def _subscribers(self, where: str, params: Sequence[object] = ()) -> list[Subscriber]:
        rows = self.query(
            f"SELECT email, locale, components, regions, token, active, postcodes FROM subscribers {where}",
            params)
        return [Subscriber(r[0], r[1], _names(r[2]), _names(r[3]), r[4], bool(r[5]), _names(r[6]))
                for r in rows]

    # -- moving a ledger between stores ------------------------------------------------

    def export_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every row of every table, as (table, {column: value}), in `TABLES` order, each table
        by its primary key (its first column).

        Read `CHUNK` rows at a time (a million deliveries never in memory at once: a whole
        table at once took 820 MB to export a million), all in one `snapshot`, so that an
        update recorded during the export is in the file with all its deliveries or not at all.
        """
        with self.snapshot():
            for table, columns in TABLES.items():
                # A delivery held by a lease goes as in flight: leases are not exported.
                read = ", ".join(self._state() if c == "state" and table == "deliveries" else f"d.{c}"
                                 for c in columns)
                key = f"d.{columns[0]}"
                rows = self.query(f"SELECT {read} FROM {table} d ORDER BY {key} LIMIT {CHUNK}")
                while rows:
                    yield from ((table, dict(zip(columns, row, strict=True))) for row in rows)
                    if len(rows) < CHUNK:
                        break
                    rows = self.query(f"SELECT {read} FROM {table} d WHERE {key} > ? ORDER BY {key}"
                                      f" LIMIT {CHUNK}", (rows[-1][0],))

    def is_empty(self) -> bool:
        """Whether the ledger holds no incident and no subscriber."""
        return not (self.query("SELECT 1 FROM incidents LIMIT 1")
                    or self.query("SELECT 1 FROM subscribers LIMIT 1"))

    def import_rows(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, int]:
        """Insert exported rows in one transaction (all or nothing); how many per table.

        Written `CHUNK` rows at a time as they are read, never held whole: the rows of a million
        subscribers and deliveries, gathered first, took 3.8 GB. A bad row late in the file
        still leaves the ledger as it was (the transaction is rolled back)."""
        counts = dict.fromkeys(TABLES, 0)
        with self.transaction() as db:
            for table, group in groupby(rows, key=lambda item: item[0]):
                columns = TABLES[table]
                insert = (f"INSERT INTO {table} ({', '.join(columns)})"
                          f" VALUES ({', '.join('?' * len(columns))})")
                while batch := [tuple(row[c] for c in columns) for _, row in islice(group, CHUNK)]:
                    db.executemany(insert, batch)
                    counts[table] += len(batch)
            self._after_import(db)
        return {table: n for table, n in counts.items() if n}

    def _after_import(self, db: Any) -> None:  # noqa: B027 (most stores need nothing)
        """What the store must do once rows came with their own ids (PostgreSQL's sequences)."""

    # -- automation: alert groups, replayed requests, reminders ------------------------

    def hook_incident(self, key: str) -> str | None:
        found = self.query("SELECT incident_id FROM hook_keys WHERE key = ?", (key,))
        return found[0][0] if found else None

    def save_hook_key(self, key: str, incident_id: str, *, auto_published: bool) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO hook_keys (key, incident_id, created_at, auto_published)"
                       " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                       " incident_id = excluded.incident_id, created_at = excluded.created_at,"
                       " auto_published = excluded.auto_published",
                       (key, incident_id, now_text(), int(auto_published)))

    def auto_published_since(self, since: datetime) -> int:
        found = self.query("SELECT COUNT(*) FROM hook_keys WHERE auto_published = 1 AND created_at > ?",
                           (since.astimezone(UTC).isoformat(),))
        return found[0][0] if found else 0  # an empty read-only view has no rows at all

    def remember_signature(self, signature: str, now: float, keep_seconds: float) -> bool:
        with self.transaction() as db:
            db.execute("DELETE FROM hook_signatures WHERE seen_at < ?", (now - keep_seconds,))
            return db.execute("INSERT INTO hook_signatures (signature, seen_at) VALUES (?, ?)"
                              " ON CONFLICT DO NOTHING", (signature, now)).rowcount == 1

    def forget_signature(self, signature: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM hook_signatures WHERE signature = ?", (signature,))

    def claim_reminder(self, update_id: str, now: datetime) -> bool:
        with self.transaction() as db:
            return db.execute("INSERT INTO reminders (update_id, sent_at) VALUES (?, ?)"
                              " ON CONFLICT DO NOTHING", (update_id, now.isoformat())).rowcount == 1

    def release_reminder(self, update_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM reminders WHERE update_id = ?", (update_id,))

    def ping(self) -> None:
        self.query("SELECT 1")

def _update_to_row(u: Update) -> tuple:
    texts = {loc: t._asdict() for loc, t in u.texts.items()}
    return (
        u.id, u.incident_id, u.seq, u.kind, u.status, u.impact,
        json.dumps(list(u.components)), json.dumps(list(u.regions)),
        json.dumps(texts, ensure_ascii=False), u.created_at.isoformat(),
        u.next_update_at.isoformat() if u.next_update_at else None, int(u.draft),
        u.starts_at.isoformat() if u.starts_at else None, u.ends_at.isoformat() if u.ends_at else None,
        int(u.apology_waived),
    )


def _update_from_row(row: tuple) -> Update:
    (uid, incident_id, seq, kind, status, impact, components, regions, texts,
     created_at, next_update_at, draft, starts_at, ends_at, apology_waived) = row
    return Update(
        id=uid,
        incident_id=incident_id,
        seq=seq,
        kind=Kind(kind),
        status=Status(status),
        impact=Impact(impact),
        components=tuple(json.loads(components)),
        regions=tuple(json.loads(regions)),
        texts={loc: Text(**t) for loc, t in json.loads(texts).items()},
        created_at=datetime.fromisoformat(created_at),
        next_update_at=_when(next_update_at),
        draft=bool(draft),
        starts_at=_when(starts_at),
        ends_at=_when(ends_at),
        apology_waived=bool(apology_waived),
    )


#: A state by its stored name: a dict lookup, not Enum's call (a batch reads back 500 rows).
_STATES = {state.value: state for state in DeliveryState}


def _delivery_from_row(row: tuple) -> Delivery:
    (did, update_id, incident_id, channel, recipient, locale, state, attempts,
     remote_id, url, error, meta, updated_at) = row
    # Positional, in Delivery's field order (the names above): a named tuple built from
    # keywords took twice as long (0.81 against 0.34 µs), once per delivery read.
    return Delivery(did, update_id, incident_id, channel, recipient, locale, _STATES[state], attempts,
                    remote_id, url, error, _meta(meta), datetime.fromisoformat(updated_at))


def _meta(value: str) -> dict:
    """A receipt's meta: "{}" for each of a million emails, read without json."""
    return json.loads(value) if value != "{}" else {}


def answered(text: str | None) -> str | None:
    """Text a relay, a platform or an endpoint gave (why a delivery failed, a post's id or
    address), as stored: with U+FFFD for any NUL in it. PostgreSQL's text refuses NUL, and a
    write refused fails every result in it (a whole group of emails, or a post already made);
    SQLite stores the same, so both stores read alike. A receipt's meta needs none: JSON
    writes a NUL as an escape."""
    return text.replace("\x00", "\ufffd") if text else text


def meta_text(meta: Mapping[str, object]) -> str:
    """A receipt's meta as stored: "{}" for each of a million emails, written without json."""
    return json.dumps(dict(meta)) if meta else "{}"


def _names_json(names: Sequence[str]) -> str:
    return json.dumps(list(names), ensure_ascii=False)


def _names(value: str) -> tuple[str, ...]:
    return tuple(json.loads(value)) if value != "[]" else ()
