"""The ledger in SQLite: WAL mode, full sync, one write transaction per state change.

Concurrency: SQLite's own locking keeps each transaction whole (BEGIN IMMEDIATE, busy
timeout), and an `flock` per incident serialises whole commands on one incident. The kernel
drops an flock when its process dies, so whoever holds the incident lock knows that any
delivery still `in_flight` for it was left by a process that no longer runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from broadcaster import defaults
from broadcaster.errors import LockTimeoutError, SettingsError, UnknownIncidentError
from broadcaster.ledger import NewDelivery
from broadcaster.model import (
    Delivery,
    DeliveryState,
    Impact,
    Incident,
    Kind,
    Receipt,
    Status,
    Text,
    Update,
    is_incident_id,
)

SCHEMA_VERSION = 9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    -- Kept in step with the latest update, only so that listings need no scan of updates.
    updated_at  TEXT NOT NULL,
    status      TEXT NOT NULL,
    draft       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_update ON incidents (updated_at DESC);
CREATE TABLE IF NOT EXISTS updates (
    id              TEXT PRIMARY KEY,
    incident_id     TEXT NOT NULL REFERENCES incidents (id),
    seq             INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    impact          TEXT NOT NULL,
    components      TEXT NOT NULL,
    regions         TEXT NOT NULL,
    texts           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    next_update_at  TEXT,
    draft           INTEGER NOT NULL,
    UNIQUE (incident_id, seq)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    update_id   TEXT NOT NULL REFERENCES updates (id),
    channel     TEXT NOT NULL,
    recipient   TEXT NOT NULL DEFAULT '',
    locale      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'sent', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    remote_id   TEXT,
    url         TEXT,
    error       TEXT,
    meta        TEXT NOT NULL DEFAULT '{}',
    updated_at  TEXT NOT NULL,
    UNIQUE (update_id, channel, recipient)
);
CREATE INDEX IF NOT EXISTS deliveries_unfinished ON deliveries (state) WHERE state != 'sent';
"""

#: Each step takes the schema from the version before it to its own.
_MIGRATIONS = {
    1: _SCHEMA,
    2: """
CREATE TABLE IF NOT EXISTS subscribers (
    email           TEXT PRIMARY KEY,
    locale          TEXT NOT NULL,
    components      TEXT NOT NULL,
    regions         TEXT NOT NULL,
    -- Opaque and unguessable: the unsubscribe link carries it, never the address.
    token           TEXT NOT NULL UNIQUE,
    active          INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
-- 'skipped' (final): the subscriber left between recording and sending.
CREATE TABLE deliveries_v2 (
    id          INTEGER PRIMARY KEY,
    update_id   TEXT NOT NULL REFERENCES updates (id),
    channel     TEXT NOT NULL,
    recipient   TEXT NOT NULL DEFAULT '',
    locale      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'sent', 'failed', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    remote_id   TEXT,
    url         TEXT,
    error       TEXT,
    meta        TEXT NOT NULL DEFAULT '{}',
    updated_at  TEXT NOT NULL,
    UNIQUE (update_id, channel, recipient)
);
INSERT INTO deliveries_v2 SELECT * FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;
CREATE INDEX deliveries_unfinished ON deliveries (state) WHERE state NOT IN ('sent', 'skipped');
CREATE INDEX deliveries_by_update ON deliveries (update_id);
""",
    3: """
-- Alert groups (Alertmanager groupKey, a generic dedupe_key) and the incident each started.
CREATE TABLE hook_keys (
    key         TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    created_at  TEXT NOT NULL
);
-- Signatures of hook requests already accepted: the same signed request is refused again.
CREATE TABLE hook_signatures (
    signature   TEXT PRIMARY KEY,
    seen_at     REAL NOT NULL
);
-- One reminder per promised next update (the update that made the promise).
CREATE TABLE reminders (
    update_id   TEXT PRIMARY KEY REFERENCES updates (id),
    sent_at     TEXT NOT NULL
);
""",
    4: """
-- The status site's history pages list incidents by the month they started.
CREATE INDEX incidents_by_start ON incidents (created_at);
""",
    5: """
-- A planned maintenance's window.
ALTER TABLE updates ADD COLUMN starts_at TEXT;
ALTER TABLE updates ADD COLUMN ends_at TEXT;
""",
    6: """
-- A resolution that deliberately carries no apology (resolve --no-apology).
ALTER TABLE updates ADD COLUMN apology_waived INTEGER NOT NULL DEFAULT 0;
-- Drafts a person discarded: kept for the record, gone from every list, page and feed.
ALTER TABLE updates ADD COLUMN discarded_at TEXT;
""",
    7: """
-- Postcodes a subscriber follows: each stands for every region it lies in, now or later.
ALTER TABLE subscribers ADD COLUMN postcodes TEXT NOT NULL DEFAULT '[]';
""",
    8: """
-- One person, one subscription: addresses that differ only in case are merged. An unsubscribe
-- on any copy wins (an unsubscribe must unsubscribe), and the oldest copy's token is kept.
UPDATE subscribers SET active = 0 WHERE lower(email) IN (
    SELECT lower(email) FROM subscribers GROUP BY lower(email) HAVING MIN(active) = 0);
DELETE FROM subscribers WHERE rowid NOT IN (
    SELECT rowid FROM subscribers s WHERE s.created_at = (
        SELECT MIN(created_at) FROM subscribers t WHERE lower(t.email) = lower(s.email))
    GROUP BY lower(email));
UPDATE subscribers SET email = lower(email);
""",
    9: """
-- Which alert groups were published with no person involved (capped per hour).
ALTER TABLE hook_keys ADD COLUMN auto_published INTEGER NOT NULL DEFAULT 0;
CREATE INDEX hook_keys_by_time ON hook_keys (created_at);
""",
}

_DELIVERY_COLUMNS = (
    "d.id, d.update_id, u.incident_id, d.channel, d.recipient, d.locale, d.state, d.attempts,"
    " d.remote_id, d.url, d.error, d.meta, d.updated_at"
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class SQLiteLedger:
    """The ledger in one SQLite file (or in memory, for previews with no state yet)."""

    def __init__(
        self,
        path: Path | None,
        *,
        readonly: bool = False,
        lock_wait: float = defaults.INCIDENT_LOCK_WAIT,
        on_wait: Callable[[str], None] | None = None,
        busy_timeout: float = 30,
    ) -> None:
        self.path = path
        self._lock_wait = lock_wait
        self._on_wait = on_wait
        self._mutex = threading.RLock()
        if path is None:
            self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        elif readonly:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(
                    path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
                )
                self._db.execute("PRAGMA journal_mode = WAL")
            except (OSError, sqlite3.Error) as exc:
                raise SettingsError(f"state.path: cannot open the ledger at {path}: {exc}") from None
        self._db.execute("PRAGMA foreign_keys = ON")
        # A delivery marked sent must survive a power cut, or a retry could post it again.
        self._db.execute("PRAGMA synchronous = FULL")
        if not readonly:
            self._migrate()

    @classmethod
    def for_preview(cls, path: Path) -> SQLiteLedger:
        """Read-only view of an existing ledger, or an empty one that writes nothing."""
        return cls(path, readonly=True) if path.exists() else cls(None)

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SettingsError(
                    f"state.path: {self.path} was written by a newer broadcaster "
                    f"(schema {version}); upgrade broadcaster"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                # executescript would commit early; run the statements inside this transaction.
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), rolled back if anything raises."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._mutex:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._mutex:
            self._db.close()

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
            " created_at, next_update_at, draft, starts_at, ends_at, apology_waived"
            f" FROM updates WHERE incident_id IN ({marks}) AND discarded_at IS NULL"
            " ORDER BY seq",
            ids,
        )
        updates: dict[str, list[Update]] = {i: [] for i in created}
        for row in rows:
            update = _update_from_row(row)
            if include_drafts or not update.draft:
                updates[update.incident_id].append(update)
        return [
            Incident(i, datetime.fromisoformat(created[i]), tuple(updates[i]))
            for i in ids
            if i in created and updates[i]
        ]

    def record(self, update: Update, deliveries: Sequence[NewDelivery]) -> None:
        with self.transaction() as db:
            now = _now()
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
            self._insert_deliveries(db, update.id, deliveries, now)
            self._refresh_incident(db, update.incident_id, now)

    def publish(self, incident_id: str, deliveries: Sequence[NewDelivery]) -> list[Update]:
        with self.transaction() as db:
            now = _now()
            ids = [r[0] for r in db.execute(
                "SELECT id FROM updates WHERE incident_id = ? AND draft = 1 AND discarded_at IS NULL"
                " ORDER BY seq",
                (incident_id,),
            )]
            for update_id in ids:
                db.execute("UPDATE updates SET draft = 0, created_at = ? WHERE id = ?", (now, update_id))
                self._insert_deliveries(db, update_id, deliveries, now)
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
            db.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", (_now(), update.incident_id))

    def discard_drafts(self, incident_id: str) -> list[str]:
        """Set an incident's unpublished drafts aside (kept for the record); their ids.

        An incident that was never published is then discarded as a whole: no list shows it.
        """
        with self.transaction() as db:
            now = _now()
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
    def _insert_deliveries(
        db: sqlite3.Connection, update_id: str, deliveries: Sequence[NewDelivery], now: str
    ) -> None:
        db.executemany(
            "INSERT INTO deliveries (update_id, channel, recipient, locale, state, updated_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?)",
            [(update_id, d.channel, d.recipient, d.locale, now) for d in deliveries],
        )

    @staticmethod
    def _refresh_incident(db: sqlite3.Connection, incident_id: str, now: str) -> None:
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
    ) -> list[Delivery]:
        where, params = [], []
        if channels is not None:
            where.append(f"d.channel IN ({','.join('?' * len(channels))})")
            params.extend(channels)
        if incident_id is not None:
            where.append("u.incident_id = ?")
            params.append(incident_id)
        if update_id is not None:
            where.append("d.update_id = ?")
            params.append(update_id)
        if unfinished:
            where.append("d.state NOT IN ('sent', 'skipped')")
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN updates u ON u.id = d.update_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY u.seq, d.id"
        return [_delivery_from_row(r) for r in self.query(sql, params)]

    def unfinished_incidents(self) -> list[str]:
        rows = self.query(
            "SELECT DISTINCT u.incident_id FROM deliveries d JOIN updates u ON u.id = d.update_id"
            " WHERE d.state NOT IN ('sent', 'skipped') ORDER BY u.incident_id"
        )
        return [r[0] for r in rows]

    def thread(self, incident_id: str, channel: str, before_seq: int) -> list[Receipt]:
        rows = self.query(
            "SELECT d.remote_id, d.url, d.meta FROM deliveries d JOIN updates u ON u.id = d.update_id"
            " WHERE u.incident_id = ? AND d.channel = ? AND u.seq < ? AND d.state = 'sent'"
            " ORDER BY u.seq, d.id",
            (incident_id, channel, before_seq),
        )
        return [Receipt(r[0], r[1], json.loads(r[2])) for r in rows]

    def start_attempt(self, delivery_id: int) -> None:
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1,"
                " updated_at = ? WHERE id = ? AND state NOT IN ('sent', 'skipped')",
                (_now(), delivery_id),
            ).rowcount
        if not changed:
            # Only possible if something bypassed the incident lock; refuse to send twice.
            raise RuntimeError(f"delivery {delivery_id} is already sent")

    def mark_sent(self, delivery_id: int, receipt: Receipt) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'sent', remote_id = ?, url = ?, meta = ?,"
                " error = NULL, updated_at = ? WHERE id = ?",
                (receipt.remote_id, receipt.url, json.dumps(dict(receipt.meta)), _now(), delivery_id),
            )

    def start_attempts(self, delivery_ids: Sequence[int]) -> None:
        """`start_attempt` for many deliveries in one transaction (a mailing list's batch)."""
        with self.transaction() as db:
            # One set-based statement (the ids as a JSON array) rather than one per recipient.
            changed = db.execute(
                "UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1, updated_at = ?"
                " WHERE id IN (SELECT value FROM json_each(?)) AND state NOT IN ('sent', 'skipped')",
                (_now(), json.dumps(list(delivery_ids))),
            ).rowcount
        if changed != len(delivery_ids):
            raise RuntimeError("some deliveries of the batch are already sent")

    def finish(self, sent: Sequence[tuple[int, Receipt]], failed: Sequence[tuple[int, str]],
               skipped: Sequence[tuple[int, str]] = ()) -> None:
        """Record many outcomes in one transaction: one fsync for a whole batch of emails."""
        with self.transaction() as db:
            now = _now()
            db.executemany(
                "UPDATE deliveries SET state = 'sent', remote_id = ?, url = ?, meta = ?,"
                " error = NULL, updated_at = ? WHERE id = ?",
                [(r.remote_id, r.url, json.dumps(dict(r.meta)), now, i) for i, r in sent],
            )
            db.executemany(
                "UPDATE deliveries SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                [(error, now, i) for i, error in failed],
            )
            db.executemany(
                "UPDATE deliveries SET state = 'skipped', error = ?, updated_at = ? WHERE id = ?",
                [(why, now, i) for i, why in skipped],
            )

    def first_receipts(self, incident_id: str, channel: str, before_seq: int) -> dict[str, Receipt]:
        """Per recipient, the receipt of their first sent delivery of the incident (email threads)."""
        rows = self.query(
            "SELECT d.recipient, d.remote_id, d.url, d.meta, MIN(u.seq) FROM deliveries d"
            " JOIN updates u ON u.id = d.update_id"
            " WHERE u.incident_id = ? AND d.channel = ? AND u.seq < ? AND d.state = 'sent'"
            " AND d.recipient != '' GROUP BY d.recipient",
            (incident_id, channel, before_seq),
        )
        return {r[0]: Receipt(r[1], r[2], json.loads(r[3])) for r in rows}

    def mark_failed(self, delivery_id: int, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
                (error, _now(), delivery_id),
            )

    # -- locking -------------------------------------------------------------------------

    @contextmanager
    def incident_lock(self, incident_id: str) -> Iterator[None]:
        if not is_incident_id(incident_id):
            # The id names a file: refuse anything that could leave the locks folder.
            raise UnknownIncidentError(f"{incident_id!r} is not an incident id")
        # One lock file per incident would pile up (an alert flood makes thousands): it is
        # removed on release, and a holder checks it locked the file that is still there.
        with self._file_lock(incident_id, f"incident {incident_id}", remove=True):
            yield

    @contextmanager
    def service_lock(self, name: Literal["automation", "tick", "site"]) -> Iterator[None]:
        """Serialise one kind of work across processes: alert hooks, tick, or writing the
        status site's shared pages (index, feeds, JSON), which every incident touches."""
        with self._file_lock(name, f"the {name} lock"):
            yield

    @contextmanager
    def _file_lock(self, name: str, what: str, *, remove: bool = False) -> Iterator[None]:
        """An flock on locks/{name}.lock: the kernel drops it when its process dies."""
        if self.path is None:
            yield
            return
        import fcntl
        import os

        folder = self.path.parent / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.lock"
        deadline = time.monotonic() + self._lock_wait
        told = False
        while True:
            handle = open(path, "a+b")  # noqa: SIM115 (closed below, after the lock)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                if time.monotonic() > deadline:
                    raise LockTimeoutError(
                        f"{what} is still busy in another broadcaster after {self._lock_wait:.0f}s; "
                        "try again"
                    ) from None
                if not told and self._on_wait is not None:
                    self._on_wait(f"waiting for another broadcaster holding {what}…")
                    told = True
                time.sleep(0.05)
                continue
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()  # the holder before us removed that file: lock the new one
        try:
            yield
        finally:
            if remove:
                path.unlink(missing_ok=True)  # still holding the lock: nobody else has this file
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def _update_to_row(u: Update) -> tuple:
    texts = {loc: vars(t) for loc, t in u.texts.items()}
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


def _delivery_from_row(row: tuple) -> Delivery:
    (did, update_id, incident_id, channel, recipient, locale, state, attempts,
     remote_id, url, error, meta, updated_at) = row
    return Delivery(
        id=did, update_id=update_id, incident_id=incident_id, channel=channel,
        recipient=recipient, locale=locale, state=DeliveryState(state), attempts=attempts,
        remote_id=remote_id, url=url, error=error, meta=json.loads(meta) if meta != "{}" else {},
        updated_at=datetime.fromisoformat(updated_at),
    )
