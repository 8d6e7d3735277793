"""Scratch space on disk for work too large for memory that is not the ledger's to keep.

A private temporary SQLite database (`sqlite3.connect("")`): a file of this connection alone,
deleted when it closes, of which SQLite caches 2 MB. It is SQLite whatever the ledger's store
is, because nothing in it outlives the command.
"""

from __future__ import annotations

import sqlite3


class FirstLines:
    """The line on which each address of a file first appeared, to name a duplicate row.

    A dict of a million addresses costs about 100 MB, and a 64-bit hash in place of each
    address could take two addresses for one; this costs about 5 µs a row and SQLite's fixed
    2 MB of cache."""

    _FIRST = ("INSERT INTO seen VALUES (?, ?) "
              "ON CONFLICT (email) DO UPDATE SET line = seen.line RETURNING line")

    def __init__(self) -> None:
        self._db = sqlite3.connect("")  # "": a temporary database of this connection alone
        self._db.execute("CREATE TABLE seen (email TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")

    def first(self, email: str, line: int) -> int:
        """The line `email` first appeared on: `line` itself the first time."""
        (first,) = self._db.execute(self._FIRST, (email, line)).fetchone()
        return int(first)

    def close(self) -> None:
        self._db.close()
