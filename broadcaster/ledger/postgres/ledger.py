"""The ledger in PostgreSQL, shared by every host of a team: psycopg 3, advisory locks.

The statements are the shared ones (ledger/sql.py); this module brings the connection and
the locks. One connection per ledger (commands are short; threads of one fan-out take turns
on it, as they do on SQLite's). A lock is an advisory lock held by a connection of its own:
PostgreSQL drops it when that connection ends, so, as with SQLite's file locks, a holder
knows that any delivery still `in_flight` was left by a process that no longer runs, on any
host.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import psycopg

from broadcaster import defaults
from broadcaster.errors import LedgerBusyError, LockTimeoutError, SettingsError
from broadcaster.ledger.postgres import schema
from broadcaster.ledger.sql import COUNTED, SQLLedger, answered, meta_text, now_text
from broadcaster.masking import MASK
from broadcaster.model import Receipt


@cache
def _dialect(sql: str) -> str:
    """The shared statements' `?` placeholders as psycopg's `%s` (no statement holds a `%`)."""
    return sql.replace("?", "%s")


class _Statements:
    """A connection that takes the shared statements as they are written."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> psycopg.Cursor:
        return self.connection.execute(_dialect(sql), params or None)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            with self.connection.cursor() as cursor:
                cursor.executemany(_dialect(sql), rows)


class Pool:
    """Connections kept open for a long-running process that opens a ledger per request
    (`serve`), with psycopg's pool. Each ledger borrows one and sets its own timeouts and
    read-only mode on it; locks still get connections of their own (closing one is what
    releases an advisory lock, whatever happens to the process)."""

    def __init__(self, url: str, *, password: str | None, size: int) -> None:
        from psycopg_pool import ConnectionPool

        self.url, self.password = url, password
        extra: dict[str, Any] = {"password": password} if password else {}
        self.pool = ConnectionPool(url, min_size=1, max_size=size, open=True, name="broadcaster",
                                   check=ConnectionPool.check_connection,
                                   kwargs={"autocommit": True, "connect_timeout": 10,
                                           "application_name": "broadcaster", **extra})

    def borrow(self, *, read_only: bool, busy_ms: int, timeout: float) -> psycopg.Connection | None:
        """A connection set up for one ledger; None if none came in time (the caller then
        connects on its own, which says what is wrong)."""
        from psycopg_pool import PoolTimeout

        try:
            connection = self.pool.getconn(timeout=timeout)
        except PoolTimeout:
            return None
        connection.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false),"
            " set_config('default_transaction_read_only', %s, false)",
            (f"{busy_ms}ms", f"{busy_ms * 4}ms", "on" if read_only else "off"))
        return connection

    def give_back(self, connection: psycopg.Connection) -> None:
        self.pool.putconn(connection)

    def close(self) -> None:
        self.pool.close()


class PostgresLedger(SQLLedger):
    """The ledger in the PostgreSQL database `[state] url` names."""

    IDS_IN = "{column} = ANY(?)"
    CLAIM_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"

    def __init__(
        self, url: str, *, password: str | None = None, read_only: bool = False,
        lock_wait: float = defaults.INCIDENT_LOCK_WAIT, on_wait: Callable[[str], None] | None = None,
        busy_timeout: float = defaults.LEDGER_BUSY_WAIT, pool: Pool | None = None,
    ) -> None:
        self.url = url
        self._password = password
        self._lock_wait = lock_wait
        self._on_wait = on_wait
        self._busy_ms = int(busy_timeout * 1000)
        self._mutex = threading.RLock()
        borrowed = (pool.borrow(read_only=read_only, busy_ms=self._busy_ms, timeout=busy_timeout)
                    if pool else None)
        self._pool = pool if borrowed is not None else None
        self._db = borrowed if borrowed is not None else self._connect(read_only=read_only)
        self.migrated: tuple[int, int] | None = None
        if read_only:
            self._empty = schema.version(self._db) == 0  # nothing written yet: an empty view
        else:
            self._empty = False
            with self._db.transaction():
                self.migrated = schema.migrate(self._db, self.where)

    @property
    def where(self) -> str:
        """The server and database, for messages (never a password)."""
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def _connect(self, *, read_only: bool = False) -> psycopg.Connection:
        options = f"-c lock_timeout={self._busy_ms} -c statement_timeout={self._busy_ms * 4}"
        if read_only:
            options += " -c default_transaction_read_only=on"
        extra: dict[str, Any] = {"password": self._password} if self._password else {}
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10, options=options,
                                   application_name="broadcaster", **extra)
        except psycopg.Error as exc:
            message = str(exc).strip()
            if self._password:
                message = message.replace(self._password, MASK)
            raise SettingsError(f"state.url: cannot open the ledger at {self.where}: {message}") from None

    @contextmanager
    def transaction(self) -> Iterator[_Statements]:
        with self._mutex, self._busy_said(), self._db.transaction():
            yield _Statements(self._db)

    @contextmanager
    def _busy_said(self) -> Iterator[None]:
        """A lock or statement that waited too long is the ledger being busy, said as such."""
        try:
            yield
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            raise LedgerBusyError(f"the ledger at {self.where} is busy: {exc}") from None

    def finish(self, sent: Sequence[tuple[int, Receipt]], failed: Sequence[tuple[int, str]],
               skipped: Sequence[tuple[int, str]] = ()) -> None:
        """What the shared `finish` records, as one statement (its own transaction: the
        connection commits each statement), so a write of results is one round trip to the
        server. BEGIN, an UPDATE a kind of result and COMMIT each waited for the server, and a
        fan-out waits for every write: a write of 16 results took 790 µs timed alone, 403 as one
        statement. The results travel as one JSON array of rows: as six arrays, a column each,
        psycopg's dumping of them cost 230–340 µs of CPU a write, as JSON 130–160."""
        rows = [[i, "sent", answered(r.remote_id), answered(r.url), meta_text(r.meta), None] for i, r in sent]
        rows += [[i, "failed", None, None, None, answered(error)] for i, error in failed]
        rows += [[i, "skipped", None, None, None, answered(why)] for i, why in skipped]
        if not rows:
            return
        with self._mutex, self._busy_said():
            # Every SET reads the row as it was. A sent delivery takes its receipt; a failed or
            # skipped one keeps what it had. The attempt is counted as the shared `finish`
            # counts it (`COUNTED`: its `state` and `attempts` are the row's), unless skipped.
            self._db.execute(
                "UPDATE deliveries AS d SET state = r.outcome, error = r.error, updated_at = %s,"
                " remote_id = CASE WHEN r.outcome = 'sent' THEN r.remote_id ELSE d.remote_id END,"
                " url = CASE WHEN r.outcome = 'sent' THEN r.url ELSE d.url END,"
                " meta = CASE WHEN r.outcome = 'sent' THEN r.meta ELSE d.meta END,"
                f" attempts = CASE WHEN r.outcome = 'skipped' THEN d.attempts ELSE {COUNTED} END"
                " FROM (SELECT (e->>0)::bigint AS id, e->>1 AS outcome, e->>2 AS remote_id, e->>3 AS url,"
                " e->>4 AS meta, e->>5 AS error FROM json_array_elements(%s::json) AS e) AS r"
                " WHERE d.id = r.id",
                (now_text(), json.dumps(rows, ensure_ascii=False)))

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        if self._empty:  # a database broadcaster never wrote to: nothing in it yet
            return []
        with self._mutex:
            return self._db.execute(_dialect(sql), params or None).fetchall()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A REPEATABLE READ transaction: its reads see the moment of the first one, and
        writers go on (a read takes no lock a write waits for)."""
        with self._mutex, self._db.transaction():
            self._db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    def close(self) -> None:
        with self._mutex:
            if self._pool is not None:
                self._pool.give_back(self._db)
            else:
                self._db.close()

    def _ids_param(self, ids: Sequence[int]) -> object:
        return list(ids)

    def _has_table(self, name: str) -> bool:
        return self.query("SELECT to_regclass(?)", (name,))[0][0] is not None

    def _after_import(self, db: Any) -> None:
        # Deliveries came with their ids: new ones must be numbered after them.
        db.execute("SELECT setval(pg_get_serial_sequence('deliveries', 'id'),"
                   " COALESCE((SELECT MAX(id) FROM deliveries), 0) + 1, false)")

    @contextmanager
    def _lock(self, name: str, what: str, *, remove: bool = False,
              wait: float | None = None) -> Iterator[None]:
        """An advisory lock on a connection of its own, for as long as the block runs."""
        wait = self._lock_wait if wait is None else wait
        holder = self._connect()
        try:
            deadline = time.monotonic() + wait
            told = False
            key = f"broadcaster:{name}"
            while not holder.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                     (key,)).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise LockTimeoutError(f"{what} is still busy in another broadcaster after "
                                           f"{wait:.0f}s; try again")
                if not told and self._on_wait is not None:
                    self._on_wait(f"waiting for another broadcaster holding {what}…")
                    told = True
                time.sleep(0.05)
            yield
        finally:
            holder.close()  # ending the session releases its advisory locks
