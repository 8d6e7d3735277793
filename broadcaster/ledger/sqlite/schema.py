"""The SQLite ledger's schema and how each version migrates to the next.

The version is SQLite's `user_version`. A ledger written by a newer broadcaster is refused
(an older program must not write rows it does not understand). Migrations run inside one
write transaction, so two processes opening an old ledger at once migrate it once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from broadcaster.errors import SettingsError
from broadcaster.ledger.sql import CHANNEL_KINDS, LEASES, SUBSCRIPTIONS, UNFINISHED_INDEX

SCHEMA_VERSION = 15

SCHEMA = """
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

#: The deliveries' check on `state` as step 2 wrote it, and as step 15 rewrites it.
STATE_IN = "CHECK (state IN ('pending', 'in_flight', 'sent', 'failed', 'skipped'))"
STATE_COMPARED = ("CHECK (state = 'pending' OR state = 'in_flight' OR state = 'sent' OR state = 'failed'"
                  " OR state = 'skipped')")


def _state_compared(db: sqlite3.Connection) -> None:
    """The same check on a delivery's state, as comparisons rather than a list.

    SQLite checks `state IN (five values)` by building a temporary B-tree of the five each time
    it writes a row (`EXPLAIN` shows an OpenEphemeral in the loop): about 2 µs of the 6 µs that
    recording an email's result took, and as much again for each delivery recorded. The text of
    a check can be changed in place, as SQLite documents for changes that leave every row as it
    is (https://sqlite.org/lang_altertable.html#otheralter: writable_schema, the schema version
    bumped so that every connection reads the schema again), at once on a ledger of any size:
    rebuilding the table would copy every delivery ever made. A schema whose text is not what
    step 2 wrote, or an SQLite built to refuse such edits (SQLITE_DBCONFIG_DEFENSIVE), is left
    as it is: the check holds either way, only slower."""
    version = db.execute("PRAGMA schema_version").fetchone()[0]
    db.execute("PRAGMA writable_schema = ON")
    try:
        changed = db.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?)"
                             " WHERE type = 'table' AND name = 'deliveries' AND instr(sql, ?) > 0",
                             (STATE_IN, STATE_COMPARED, STATE_IN)).rowcount
        if changed:
            db.execute(f"PRAGMA schema_version = {version + 1}")
    except sqlite3.DatabaseError:  # an SQLite built defensive refuses: the check stays as it was
        pass
    finally:
        db.execute("PRAGMA writable_schema = OFF")


#: Each step takes the schema from the version before it to its own: statements, or a function
#: that runs them.
MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {
    1: SCHEMA,
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
    10: """
-- Leases: who is sending a batch of a mailing list, and until when, so that several workers
-- share a fan-out and a dead one's batch is taken over once its lease runs out.
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until TEXT;
CREATE INDEX deliveries_open ON deliveries (update_id, channel, id) WHERE state IN ('pending', 'in_flight');
""",
    11: SUBSCRIPTIONS,  # ledger/sql.py: the same in both stores
    12: CHANNEL_KINDS,
    13: UNFINISHED_INDEX,  # ledger/sql.py: the same in both stores
    14: LEASES.format(serial="INTEGER"),  # ledger/sql.py; the lease columns of 10 stay unwritten
    15: _state_compared,
}


def migrate(db: sqlite3.Connection, path: Path | None) -> tuple[int, int]:
    """Bring the schema up to SCHEMA_VERSION, inside the caller's write transaction; (the
    version before, the version now)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SettingsError(
            f"state.path: {path} was written by a newer broadcaster "
            f"(schema {version}); upgrade broadcaster"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        change = MIGRATIONS[step]
        if callable(change):
            change(db)
            continue
        # executescript would commit early; run the statements inside this transaction.
        for statement in change.split(";"):
            if statement.strip():
                db.execute(statement)
    if version < SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return version, SCHEMA_VERSION
