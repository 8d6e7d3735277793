"""The ledger as a file: `broadcaster state export` and `state import`, to move a team's
ledger between stores (one laptop's SQLite to the team's PostgreSQL, or back).

JSON Lines: a header, then one line per row, table by table in an order that keeps every
reference valid:

    {"format": "broadcaster-ledger", "version": 1, "exported_at": "…", "store": "sqlite"}
    {"table": "incidents", "row": {"id": "…", "created_at": "…", …}}

Every incident, update, delivery (with its state and receipt), subscriber (with the token
their unsubscribe links carry), alert group and reminder is kept. The file holds those
tokens, so it is written readable by its owner only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broadcaster.errors import InputError
from broadcaster.ledger.interface import Ledger
from broadcaster.report import Result

FORMAT = "broadcaster-ledger"
VERSION = 1


def write(ledger: Ledger, path: Path, store: str) -> dict[str, int]:
    """Write every row to a new file at `path` (never over an existing one); rows per table."""
    counts: dict[str, int] = {}
    if path.exists():  # say so before reading a whole ledger
        raise InputError(f"{path} exists; export to a new file")
    partial = path.with_name(f".{path.name}.partial")
    try:
        handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{partial}: a previous export was interrupted; remove it and try again") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write the export: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            header = {"format": FORMAT, "version": VERSION, "store": store,
                      "exported_at": datetime.now(UTC).isoformat(timespec="seconds")}
            out.write(json.dumps(header) + "\n")
            with closing(ledger.export_rows()) as rows:  # its snapshot ends here, even on an error
                for table, row in rows:
                    out.write(json.dumps({"table": table, "row": row}, ensure_ascii=False) + "\n")
                    counts[table] = counts.get(table, 0) + 1
            out.flush()
            os.fsync(out.fileno())
        try:  # a link never replaces a file, even one created meanwhile
            os.link(partial, path)
        except FileExistsError:
            raise InputError(f"{path} exists; export to a new file") from None
    finally:
        partial.unlink(missing_ok=True)
    return counts


def read(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of an export. The file and its header are checked now (before any ledger is
    opened); each row as it is read, with an InputError naming the line."""
    try:
        lines = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the export: {exc.strerror or exc}") from None
    try:
        header = _json(lines.readline(), f"{path}:1")
    except BaseException:
        lines.close()
        raise
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        lines.close()
        raise InputError(f"{path}:1: not a `broadcaster state export` file")
    if header.get("version") != VERSION:
        lines.close()
        raise InputError(f"{path}:1: export format version {header.get('version')!r}; this broadcaster "
                         f"reads version {VERSION}")
    return _rows(path, lines)


def _rows(path: Path, lines: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    from broadcaster.ledger.interface import ADDED_COLUMNS, TABLES

    order = list(TABLES)
    last = 0
    with lines:
        for number, line in enumerate(lines, start=2):
            where = f"{path}:{number}"
            item = _json(line, where)
            table = item.get("table") if isinstance(item, dict) else None
            row = item.get("row") if isinstance(item, dict) else None
            if table not in TABLES or not isinstance(row, dict):
                raise InputError(f"{where}: expected a table (one of {', '.join(TABLES)}) and its row")
            if order.index(table) < last:
                raise InputError(f"{where}: {table} rows after {order[last]} rows; the file was reordered")
            last = order.index(table)
            if set(row) != set(TABLES[table]):
                missing = set(TABLES[table]) - set(row)
                if set(row) - set(TABLES[table]) or not missing <= ADDED_COLUMNS.get(table, set()):
                    raise InputError(f"{where}: a {table} row needs exactly {', '.join(TABLES[table])}")
                row = {**row, **dict.fromkeys(missing)}  # written before those columns existed
            yield table, row


def _json(line: str, where: str) -> Any:
    if not line.strip():
        raise InputError(f"{where}: empty; not a `broadcaster state export` file")
    try:
        return json.loads(line)
    except ValueError as exc:
        raise InputError(f"{where}: not JSON ({exc}); is this a `broadcaster state export` file?") from None


@dataclass(frozen=True)
class StateReport(Result):
    """`broadcaster state migrate`: which store, and its schema before and after."""

    store: str  # sqlite | postgresql
    where: str
    before: int
    after: int

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "where": self.where, "schema_before": self.before,
                "schema": self.after, "migrated": self.before != self.after}

    def text(self) -> str:
        done = (f"migrated from schema {self.before} to {self.after}" if self.before != self.after
                else f"already at schema {self.after}; nothing to do")
        return f"{self.store} ledger at {self.where}: {done}."


@dataclass(frozen=True)
class TransferReport(Result):
    """`broadcaster state export` / `import`: which file, which store, how many rows of what."""

    action: str  # exported | imported
    path: str
    store: str
    where: str
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "file": self.path, "store": self.store, "where": self.where,
                "rows": self.counts}

    def text(self) -> str:
        rows = ", ".join(f"{n:,} {table}" for table, n in self.counts.items() if n) or "nothing"
        direction = "from" if self.action == "exported" else "into"
        return f"{self.action.capitalize()} {rows} {direction} the {self.store} ledger at {self.where}" + (
            f" ({self.path})." if self.action == "imported" else f" to {self.path}.")

    def notes(self) -> list[str]:
        if self.action == "exported":
            return [f"note: {self.path} holds every subscriber's unsubscribe token; it is readable by "
                    "you only. Delete it once imported."]
        return []
