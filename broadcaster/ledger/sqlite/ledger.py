"""The ledger in one SQLite file: WAL mode, full sync, one write transaction per state change.

Concurrency: SQLite's own locking keeps each transaction whole (BEGIN IMMEDIATE, busy
timeout), and a file lock per incident (locks.py) serialises whole commands on one incident.
The statements themselves are the shared ones in ledger/sql.py; schema.py holds the tables.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from broadcaster import defaults
from broadcaster.errors import LedgerBusyError, SettingsError
from broadcaster.ledger.sql import SQLLedger
from broadcaster.ledger.sqlite import schema
from broadcaster.ledger.sqlite.locks import file_lock
from broadcaster.model import Subscriber


def use_wal(db: sqlite3.Connection, wait: float, pause: float = 0.01) -> None:
    """Switch to WAL, waiting up to `wait` seconds for other connections.

    While several processes create the same new ledger at once, one of them turning on WAL can
    make another's switch answer "database is locked" at once, without the busy handler (about
    one open in a thousand with ten processes; ten announces at once on a fresh ledger hit it).
    """
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)


class SQLiteLedger(SQLLedger):
    """The ledger in one SQLite file (or in memory, for previews with no state yet)."""

    IDS_IN = "{column} IN (SELECT value FROM json_each(?))"

    def __init__(
        self,
        path: Path | None,
        *,
        readonly: bool = False,
        lock_wait: float = defaults.INCIDENT_LOCK_WAIT,
        on_wait: Callable[[str], None] | None = None,
        busy_timeout: float = defaults.LEDGER_BUSY_WAIT,
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
                use_wal(self._db, busy_timeout)
            except (OSError, sqlite3.Error) as exc:
                raise SettingsError(f"state.path: cannot open the ledger at {path}: {exc}") from None
        self._db.execute("PRAGMA foreign_keys = ON")
        # A delivery marked sent must survive a power cut, or a retry could post it again.
        self._db.execute("PRAGMA synchronous = FULL")
        #: (schema version before, after) when this ledger was opened for writing.
        self.migrated: tuple[int, int] | None = None
        if not readonly:
            self._migrate()

    @classmethod
    def for_preview(cls, path: Path) -> SQLiteLedger:
        """Read-only view of an existing ledger, or an empty one that writes nothing.

        A file without the schema yet is as good as none: another command is creating the
        ledger at this moment (the file appears before the transaction that makes its tables
        commits). Read as it was, it said "no such table" to about one announce in 500, ten
        started at once on a new ledger. PostgreSQL's view does the same (`_empty`).
        """
        if path.exists():
            view = cls(path, readonly=True)
            if view.query("PRAGMA user_version")[0][0] > 0:
                return view
            view.close()
        return cls(None)

    def _migrate(self) -> None:
        with self.transaction() as db:
            self.migrated = schema.migrate(db, self.path)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), rolled back if anything raises."""
        with self._mutex:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                # Still locked after the busy timeout: say so in the store's own words.
                raise LedgerBusyError(f"the ledger at {self.path} is busy: {exc}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._mutex:
            return self._db.execute(sql, params).fetchall()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A deferred transaction: in WAL mode its reads keep the moment of the first one, and
        commands writing meanwhile go on (they append to the WAL; a checkpoint waits)."""
        with self._mutex:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def close(self) -> None:
        with self._mutex:
            self._db.close()

    def _ids_param(self, ids: Sequence[int]) -> object:
        return json.dumps(list(ids))

    def _has_table(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    @contextmanager
    def _lock(self, name: str, what: str, *, remove: bool = False,
              wait: float | None = None) -> Iterator[None]:
        if self.path is None:  # an in-memory preview: nothing to share with anyone
            yield
            return
        # One lock file per incident would pile up (an alert flood makes thousands): it is
        # removed on release, and a holder checks it locked the file that is still there.
        with file_lock(self.path.parent / "locks", name, what, wait=self._lock_wait if wait is None else wait,
                       on_wait=self._on_wait, remove=remove):
            yield

    def _subscribers(self, where: str, params: Sequence[object] = ()) -> list[Subscriber]:
        with _before_subscribers():
            return super()._subscribers(where, params)
        return []

    def subscriber_locales(self, *, unfiltered_only: bool = False) -> dict[str, int]:
        with _before_subscribers():
            return super().subscriber_locales(unfiltered_only=unfiltered_only)
        return {}


@contextmanager
def _before_subscribers() -> Iterator[None]:
    """Swallow "no such table": a read-only view of a ledger written before subscribers existed
    (schema 1) has none, and cannot be migrated from a view."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
