"""Email subscribers: who they are, what they follow, and how they are imported.

A subscriber has an address, a locale, and the components and regions they follow (none
means everything). They live in the ledger's database, each with an opaque token: the
unsubscribe link carries the token, never the address, and a token cannot be guessed.
Someone who unsubscribed stays on file as inactive, so importing the same spreadsheet again
does not sign them back up; only an explicit `subscribers add` does.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from broadcaster.errors import InputError
from broadcaster.places import Places, normal_postcode, touches_components
from broadcaster.sqlite_ledger import SQLiteLedger

if TYPE_CHECKING:
    from broadcaster.settings import Settings

CSV_COLUMNS = ("email", "locale", "components", "regions", "postcodes")


@dataclass(frozen=True)
class Subscriber:
    email: str
    locale: str
    components: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    token: str = ""
    active: bool = True
    #: Postcodes followed: they stand for every region they lie in, configured now or later.
    postcodes: tuple[str, ...] = ()

    def follows(self, components: Sequence[str], regions: Sequence[str], places: Places) -> bool:
        """Whether an incident touching these components and regions concerns them: one of
        their components in one of their places (see `places` for how regions nest)."""
        return (touches_components(components, self.components)
                and places.touches(regions, self.regions, self.postcodes))


@dataclass
class ImportReport:
    """What an import did, and every row it refused with its line number."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Addresses that unsubscribed earlier: an import never signs them up again.
    kept_unsubscribed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """2 when a row was refused (the good rows are kept all the same)."""
        return 2 if self.problems else 0

    def to_json(self) -> dict[str, object]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "kept_unsubscribed": self.kept_unsubscribed, "problems": self.problems,
                "exit_code": self.exit_code}

    def text(self) -> str:
        lines = [f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged."]
        if self.kept_unsubscribed:
            lines.append(f"{len(self.kept_unsubscribed)} left earlier and stay unsubscribed "
                         "(`broadcaster subscribers add` signs one up again): "
                         + ", ".join(self.kept_unsubscribed[:10])
                         + (" …" if len(self.kept_unsubscribed) > 10 else ""))
        if self.problems:
            lines.append(f"{len(self.problems)} rows refused; the others were imported:")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class SubscriberList:
    """`broadcaster subscribers list`: tokens are secrets of each subscriber, never listed."""

    subscribers: Sequence[Subscriber]

    def to_json(self) -> list[dict[str, object]]:
        return [{"email": s.email, "locale": s.locale, "components": list(s.components),
                 "regions": list(s.regions), "postcodes": list(s.postcodes), "active": s.active}
                for s in self.subscribers]

    def text(self) -> str:
        if not self.subscribers:
            return "No subscribers."
        rows = [("EMAIL", "LOCALE", "STATE", "FOLLOWS")]
        for s in self.subscribers:
            follows = "; ".join((*s.components, *s.regions, *s.postcodes)) or "everything"
            rows.append((s.email, s.locale, "active" if s.active else "unsubscribed", follows))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows)


def normalize_address(address: str, *, keep_case: bool = False) -> str:
    """The address as mailbox providers treat it: validated and normalised by email-validator
    (domain lowercased), and the local part lowercased too unless `keep_case` (RFC 5321 lets a
    server tell Ana@ from ana@, but no common provider does: one person, one subscription).
    InputError if it is not an address."""
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InputError(f"{address.strip()!r} is not a valid email address: {exc}") from None
    normal = checked.ascii_email or checked.normalized
    return normal if keep_case else normal.lower()


def keeps_case(settings: Settings) -> bool:
    """Whether `[channels.email] case_sensitive_addresses` tells Ana@ from ana@ (off by default)."""
    email = settings.channels.get("email")
    return bool(getattr(email, "case_sensitive_addresses", False))


def parse_csv(path: Path, settings: Settings) -> tuple[list[tuple[int, Subscriber]], list[str]]:
    """Good rows with their line numbers, and a message for each bad row (file:line: why)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the subscriber list: {exc}") from None
    rows: list[tuple[int, Subscriber]] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if line == 1 and cells[0].strip().casefold() == "email":
            continue  # the header row
        try:
            subscriber = _row(cells, settings)
        except InputError as exc:
            problems.append(f"{path}:{line}: {exc}")
            continue
        if subscriber.email in seen:
            problems.append(f"{path}:{line}: {subscriber.email} is already on line {seen[subscriber.email]}; "
                            "kept that one")
            continue
        seen[subscriber.email] = line
        rows.append((line, subscriber))
    return rows, problems


def _row(cells: list[str], settings: Settings) -> Subscriber:
    if len(cells) > len(CSV_COLUMNS):
        raise InputError(f"{len(cells)} columns; expected at most {len(CSV_COLUMNS)}: "
                         f"{', '.join(CSV_COLUMNS)}")
    email, locale, components, regions, postcodes = [*(c.strip() for c in cells), "", "", "", ""][:5]
    return make_subscriber(email, locale, settings.known_names(_names(components), "component"),
                           settings.known_names(_names(regions), "region"), settings.organization.locales,
                           _names(postcodes), keep_case=keeps_case(settings))


def make_subscriber(email: str, locale: str, components: Sequence[str], regions: Sequence[str],
                    locales: Sequence[str], postcodes: Sequence[str] = (), *, keep_case: bool = False,
                    ) -> Subscriber:
    """A validated subscriber (address normalised, locale known, postcodes well formed)."""
    import re

    if not email:
        raise InputError("the email column is empty")
    locale = locale or locales[0]
    if locale not in locales:
        raise InputError(f"locale {locale!r} is not one of [organization] locales: {', '.join(locales)}")
    codes = tuple(dict.fromkeys(normal_postcode(p) for p in postcodes))
    bad = [p for p in codes if not re.fullmatch(r"[0-9A-Z-]{2,10}", p)]
    if bad:
        raise InputError(f"postcode {bad[0]!r} is not a postcode (letters, digits and '-', 2 to 10)")
    address = normalize_address(email, keep_case=keep_case)
    return Subscriber(address, locale, tuple(components), tuple(regions), postcodes=codes)


def _names(cell: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in cell.split(";") if n.strip()))


class SubscriberStore:
    """Subscribers in the ledger's database."""

    def __init__(self, ledger: SQLiteLedger) -> None:
        self.ledger = ledger

    def active(self) -> list[Subscriber]:
        return self._select("WHERE active = 1 ORDER BY email")

    def all(self) -> list[Subscriber]:
        return self._select("ORDER BY email")

    def active_tokens(self) -> dict[str, str]:
        """Every active subscriber's token by address (one query, for a whole fan-out)."""
        try:
            return dict(self.ledger.query("SELECT email, token FROM subscribers WHERE active = 1"))
        except sqlite3.OperationalError:
            return {}

    def by_token(self, token: str) -> Subscriber | None:
        found = self._select("WHERE token = ?", [token])
        return found[0] if found else None

    def by_emails(self, emails: Sequence[str]) -> dict[str, Subscriber]:
        found: dict[str, Subscriber] = {}
        for start in range(0, len(emails), 500):
            chunk = list(emails[start:start + 500])
            marks = ",".join("?" * len(chunk))
            found.update((s.email, s) for s in self._select(f"WHERE email IN ({marks})", chunk))
        return found

    def save(self, subscribers: Sequence[Subscriber], *, resubscribe: bool) -> ImportReport:
        """Add or update subscribers; with `resubscribe`, also sign unsubscribed ones back up."""
        report = ImportReport()
        now = datetime.now(UTC).isoformat()
        existing = self.by_emails([s.email for s in subscribers])
        with self.ledger.transaction() as db:
            for new in subscribers:
                old = existing.get(new.email)
                if old is None:
                    db.execute(
                        "INSERT INTO subscribers (email, locale, components, regions, postcodes, token,"
                        " active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                        (new.email, new.locale, json.dumps(new.components, ensure_ascii=False),
                         json.dumps(new.regions, ensure_ascii=False), json.dumps(new.postcodes),
                         secrets.token_urlsafe(24), now, now),
                    )
                    report.added += 1
                elif not old.active and not resubscribe:
                    report.kept_unsubscribed.append(new.email)
                elif (old.locale, old.components, old.regions, old.postcodes, old.active) == (
                        new.locale, new.components, new.regions, new.postcodes, True):
                    report.unchanged += 1
                else:
                    db.execute(
                        "UPDATE subscribers SET locale = ?, components = ?, regions = ?, postcodes = ?,"
                        " active = 1, updated_at = ? WHERE email = ?",
                        (new.locale, json.dumps(new.components, ensure_ascii=False),
                         json.dumps(new.regions, ensure_ascii=False), json.dumps(new.postcodes), now,
                         new.email),
                    )
                    report.updated += 1
        return report

    def deactivate(self, *, email: str | None = None, token: str | None = None) -> Subscriber | None:
        """Unsubscribe by address or by token; the subscriber, or None if there was none."""
        column, value = ("email", email) if email is not None else ("token", token)
        found = self._select(f"WHERE {column} = ? AND active = 1", [value])
        if not found:
            return None
        with self.ledger.transaction() as db:
            db.execute(f"UPDATE subscribers SET active = 0, updated_at = ? WHERE {column} = ?",
                       (datetime.now(UTC).isoformat(), value))
        return found[0]

    def _select(self, where: str, params: Sequence[object] = ()) -> list[Subscriber]:
        try:
            rows = self.ledger.query(
                "SELECT email, locale, components, regions, token, active, postcodes"
                f" FROM subscribers {where}", params
            )
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # a read-only view of a ledger written before subscribers existed
            raise
        return [Subscriber(r[0], r[1], _names_from_json(r[2]), _names_from_json(r[3]), r[4], bool(r[5]),
                           _names_from_json(r[6])) for r in rows]


def _names_from_json(value: str) -> tuple[str, ...]:
    return tuple(json.loads(value)) if value != "[]" else ()
