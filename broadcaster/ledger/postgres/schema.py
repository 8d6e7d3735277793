"""The PostgreSQL ledger's schema and how each version migrates to the next.

The same tables as SQLite's (ledger/sqlite/schema.py; its version 11 is this one's 3), so that the shared
statements in ledger/sql.py run on both: times are ISO text in UTC, lists JSON text, flags
0/1. The version is a row of `broadcaster_schema`. Migrations run in one transaction under an
advisory lock, so two hosts starting at once migrate once, and a ledger written by a newer
broadcaster is refused.
"""

from __future__ import annotations

from typing import Any

from broadcaster.errors import SettingsError
from broadcaster.ledger.sql import CHANNEL_KINDS, LEASES, SUBSCRIPTIONS, UNFINISHED_INDEX

SCHEMA_VERSION = 6

#: Any number: the advisory lock that serialises migrations across hosts.
MIGRATION_LOCK = 0x62726F6164  # "broad"

MIGRATIONS = {
    1: """
CREATE TABLE broadcaster_schema (version INTEGER NOT NULL);
INSERT INTO broadcaster_schema (version) VALUES (0);
CREATE TABLE incidents (
    id          TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    -- Kept in step with the latest update, only so that listings need no scan of updates.
    updated_at  TEXT NOT NULL,
    status      TEXT NOT NULL,
    draft       INTEGER NOT NULL
);
CREATE INDEX incidents_by_update ON incidents (updated_at DESC);
CREATE INDEX incidents_by_start ON incidents (created_at);
CREATE TABLE updates (
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
    starts_at       TEXT,
    ends_at         TEXT,
    apology_waived  INTEGER NOT NULL DEFAULT 0,
    discarded_at    TEXT,
    UNIQUE (incident_id, seq)
);
CREATE TABLE deliveries (
    id          BIGSERIAL PRIMARY KEY,
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
CREATE INDEX deliveries_unfinished ON deliveries (state) WHERE state NOT IN ('sent', 'skipped');
CREATE INDEX deliveries_by_update ON deliveries (update_id);
CREATE TABLE subscribers (
    email           TEXT PRIMARY KEY,
    locale          TEXT NOT NULL,
    components      TEXT NOT NULL,
    regions         TEXT NOT NULL,
    -- Opaque and unguessable: the unsubscribe link carries it, never the address.
    token           TEXT NOT NULL UNIQUE,
    active          INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    postcodes       TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE hook_keys (
    key             TEXT PRIMARY KEY,
    incident_id     TEXT NOT NULL REFERENCES incidents (id),
    created_at      TEXT NOT NULL,
    auto_published  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX hook_keys_by_time ON hook_keys (created_at);
CREATE TABLE hook_signatures (
    signature   TEXT PRIMARY KEY,
    seen_at     DOUBLE PRECISION NOT NULL
);
CREATE TABLE reminders (
    update_id   TEXT PRIMARY KEY REFERENCES updates (id),
    sent_at     TEXT NOT NULL
);
""",
    2: """
-- Leases: who is sending a batch of a mailing list, and until when (see SQLite's version 10).
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT, ADD COLUMN lease_until TEXT;
CREATE INDEX deliveries_open ON deliveries (update_id, channel, id) WHERE state IN ('pending', 'in_flight');
""",
    # Self-service subscription: consent, unconfirmed requests, rate-limit counters.
    3: SUBSCRIPTIONS.replace("REAL", "DOUBLE PRECISION"),
    4: CHANNEL_KINDS,
    5: UNFINISHED_INDEX,
    6: LEASES.format(serial="BIGSERIAL"),
}


def version(db: Any) -> int:
    """The schema version of the database (0 when broadcaster never wrote to it)."""
    if db.execute("SELECT to_regclass('broadcaster_schema')").fetchone()[0] is None:
        return 0
    return db.execute("SELECT version FROM broadcaster_schema").fetchone()[0]


def migrate(db: Any, where: str) -> tuple[int, int]:
    """Bring the schema up to SCHEMA_VERSION inside the caller's transaction, one host at a time;
    (the version before, the version now)."""
    db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    before = version(db)
    if before > SCHEMA_VERSION:
        raise SettingsError(f"state.url: {where} was written by a newer broadcaster "
                            f"(schema {before}); upgrade broadcaster")
    for step in range(before + 1, SCHEMA_VERSION + 1):
        db.execute(MIGRATIONS[step])
    if before < SCHEMA_VERSION:
        db.execute("UPDATE broadcaster_schema SET version = %s", (SCHEMA_VERSION,))
    return before, SCHEMA_VERSION
