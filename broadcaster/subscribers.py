"""Email subscribers: who follows what, how they are imported, added and removed.

A subscriber (model.Subscriber) has an address, a locale, and the components, regions and
postcodes they follow (none means everything). They live in the ledger, each with an opaque
token: the unsubscribe link carries the token, never the address, and a token cannot be
guessed. Someone who unsubscribed stays on file as inactive, so importing the same
spreadsheet again does not sign them back up; only an explicit `subscribers add` does.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from broadcaster.addresses import normalize_address
from broadcaster.errors import InputError
from broadcaster.ledger import Ledger, Streamed, first_lines, open_ledger
from broadcaster.model import Incident, Subscriber, SubscriptionRequest
from broadcaster.places import Places, normal_postcode
from broadcaster.report import Result, json_array

if TYPE_CHECKING:
    from broadcaster.preflight import Audience
    from broadcaster.settings import Settings

CSV_COLUMNS = ("email", "locale", "components", "regions", "postcodes")
#: Rows an import reads, checks and saves at a time (one transaction each).
IMPORT_BATCH = 5000
#: Addresses a report names in full (the rest are counted).
LISTED = 100
#: Refused rows an import report names in full (the rest are counted): a file in the wrong
#: format refuses every row, and a million messages would be neither read nor held.
PROBLEMS_LISTED = 1000


@dataclass
class ImportReport(Result):
    """What an import did, and every row it refused with its line number."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Addresses that unsubscribed earlier: an import never signs them up again (the first
    #: `LISTED` of them; `kept` says how many in all).
    kept_unsubscribed: list[str] = field(default_factory=list)
    kept: int = 0
    #: The first `PROBLEMS_LISTED` refused rows (file:line: why); `refused` counts them all.
    problems: list[str] = field(default_factory=list)
    refused: int = 0

    @property
    def exit_code(self) -> int:
        """2 when a row was refused (the good rows are kept all the same)."""
        return 2 if self.refused else 0

    def add(self, batch: ImportReport, problems: Sequence[str]) -> None:
        """Count one batch in: what `save` did with its rows, and the rows the file refused.
        Addresses and problems are named up to `LISTED` and `PROBLEMS_LISTED`, then counted."""
        self.added += batch.added
        self.updated += batch.updated
        self.unchanged += batch.unchanged
        self.kept_unsubscribed += _first(LISTED, self.kept_unsubscribed, batch.kept_unsubscribed)
        self.kept += batch.kept
        self.problems += _first(PROBLEMS_LISTED, self.problems, problems)
        self.refused += len(problems)

    def to_json(self) -> dict[str, object]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "kept_unsubscribed": self.kept_unsubscribed, "kept_unsubscribed_count": self.kept,
                "problems": self.problems, "refused_count": self.refused,
                "exit_code": self.exit_code}

    def text(self) -> str:
        lines = [f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged."]
        if self.kept_unsubscribed:
            lines.append(f"{self.kept:,} left earlier and stay unsubscribed "
                         "(`broadcaster subscribers add` signs one up again): "
                         + ", ".join(self.kept_unsubscribed[:10])
                         + (" …" if self.kept > 10 else ""))
        if self.refused:
            lines.append(f"{self.refused:,} rows refused; the others were imported:")
            lines += [f"  {p}" for p in self.problems]
            if self.refused > len(self.problems):
                lines.append(f"  … and {self.refused - len(self.problems):,} more, not listed "
                             "(fix these and import again to see them)")
        return "\n".join(lines)


def _first(cap: int, named: Sequence[str], more: Sequence[str]) -> Sequence[str]:
    """Of `more`, those that still fit in a list of `cap` after `named`."""
    return more[:max(cap - len(named), 0)]


@dataclass(frozen=True)
class SubscriberList(Result):
    """`broadcaster subscribers list`: tokens are secrets of each subscriber, never listed."""

    subscribers: Sequence[Subscriber]

    def to_json(self) -> list[dict[str, object]]:
        return [_person(s) for s in self.subscribers]

    def text(self) -> str:
        if not self.subscribers:
            return "No subscribers."
        rows = [("EMAIL", "LOCALE", "STATE", "FOLLOWS")]
        for s in self.subscribers:
            follows = "; ".join((*s.components, *s.regions, *s.postcodes)) or "everything"
            rows.append((s.email, s.locale, "active" if s.active else "unsubscribed", follows))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows)


@dataclass(frozen=True)
class Roster(Result):
    """`broadcaster subscribers list`: how many people are active, waiting to confirm (asked on
    the status page) and unsubscribed; with `--json`, each of them (never their tokens),
    printed as they are read."""

    counts: Mapping[str, int]
    subscribers: Iterable[Subscriber] = ()
    pending: Sequence[SubscriptionRequest] = ()

    def to_json(self) -> list[dict[str, object]]:
        return list(self._people())

    def lines(self, as_json: bool) -> Iterator[str] | None:
        # A million subscribers as one list to dump took 2.2 GB: each is printed as it is read.
        return json_array(self._people()) if as_json else None

    def _people(self) -> Iterator[dict[str, object]]:
        for s in self.subscribers:
            yield {**_person(s), "state": "active" if s.active else "unsubscribed"}
        for r in self.pending:
            yield {**_person(r.subscriber), "state": "pending", "requested_at": r.created_at.isoformat(),
                   "expires_at": r.expires_at.isoformat()}

    def text(self) -> str:
        c = self.counts
        return (f"{c['active']:,} active, {c['pending']:,} waiting to confirm, "
                f"{c['unsubscribed']:,} unsubscribed.")

    def notes(self) -> list[str]:
        return ["`broadcaster subscribers list --json` lists each of them; "
                "`broadcaster subscribers export EMAIL` shows everything held about one."]


def _person(s: Subscriber) -> dict[str, object]:
    return {"email": s.email, "locale": s.locale, "components": list(s.components),
            "regions": list(s.regions), "postcodes": list(s.postcodes), "active": s.active}


def keeps_case(settings: Settings) -> bool:
    """Whether `[channels.email] case_sensitive_addresses` tells Ana@ from ana@ (off by default)."""
    email = settings.channels.get("email")
    return bool(getattr(email, "case_sensitive_addresses", False))


def parse_csv(path: Path, settings: Settings, *, batch: int = IMPORT_BATCH,
              ) -> Iterator[tuple[list[tuple[int, Subscriber]], list[str]]]:
    """The file a batch at a time: its good rows with their line numbers, and a message for
    each bad row (file:line: why). Streamed: a million rows are never in memory at once, and
    the lines that name duplicates are kept on disk (`first_lines`)."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the subscriber list: {exc}") from None
    seen = first_lines()
    rows: list[tuple[int, Subscriber]] = []
    problems: list[str] = []
    with handle:
        reader = csv.reader(handle)
        try:
            for cells in reader:
                if len(rows) >= batch or len(problems) >= batch:  # a batch is full, of either
                    yield rows, problems
                    rows, problems = [], []
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
                first = seen.first(subscriber.email, line)
                if first != line:
                    problems.append(f"{path}:{line}: {subscriber.email} is already on line {first}; "
                                    "kept that one")
                    continue
                rows.append((line, subscriber))
        except csv.Error as exc:
            problems.append(f"{path}:{reader.line_num}: cannot read the row: {exc}; the rest was not read")
        finally:
            seen.close()
    yield rows, problems


def scan(path: Path) -> int:
    """Lines in the file, read in blocks; InputError naming the line if it is not UTF-8, before
    a single row is imported (the rows are then read a batch at a time)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    lines = 0
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    line = lines + block[:max(exc.start, 0)].count(b"\n") + 1
                    raise InputError(f"{path}:{line}: not UTF-8 text ({exc.reason}); save the list as "
                                     "UTF-8 (CSV UTF-8 in a spreadsheet) and import it again") from None
                lines += block.count(b"\n")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the subscriber list: {exc}") from None
    return lines


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


def save(ledger: Ledger, subscribers: Sequence[Subscriber], *, resubscribe: bool) -> ImportReport:
    """Add or update subscribers; with `resubscribe`, also sign unsubscribed ones back up."""
    report = ImportReport()
    existing = ledger.subscribers_by_email([s.email for s in subscribers])
    added: list[Subscriber] = []
    changed: list[Subscriber] = []
    for new in subscribers:
        old = existing.get(new.email)
        if old is None:
            added.append(Subscriber(new.email, new.locale, new.components, new.regions,
                                    secrets.token_urlsafe(24), True, new.postcodes))
        elif not old.active and not resubscribe:
            report.kept_unsubscribed.append(new.email)
            report.kept += 1
        elif (old.locale, old.components, old.regions, old.postcodes, old.active) == (
                new.locale, new.components, new.regions, new.postcodes, True):
            report.unchanged += 1
        else:
            changed.append(new)
    ledger.save_subscribers(added, changed)
    report.added, report.updated = len(added), len(changed)
    return report


def audience(ledger: Ledger, settings: Settings, incident: Incident) -> Audience:
    """The active subscribers this incident concerns (by its every update's components and
    regions: someone concerned once stays in the thread), counted per locale.

    Whoever follows everything is concerned by any incident, and an incident with no
    components or regions concerns everyone: those are counted by the ledger and recorded
    set-based (`Audience.everyone`). Only subscribers who chose components, regions or
    postcodes, when the incident has some, are read here, checked one by one and streamed
    again from the ledger when the deliveries are recorded."""
    from broadcaster.preflight import Audience

    components = list(dict.fromkeys(n for u in incident.updates for n in u.components))
    regions = list(dict.fromkeys(n for u in incident.updates for n in u.regions))
    places = Places.of(settings.regions)
    locales = tuple(settings.organization.locales)
    everyone = not components and not regions

    def home(locale: str) -> str:
        """The locale they get: their own if the site has it, else the default."""
        return locale if locale in locales else locales[0]

    def each() -> Iterator[tuple[str, str]]:
        if everyone:
            return
        for subscriber in ledger.each_subscriber(active_only=True, filtered_only=True):
            if subscriber.follows(components, regions, places):
                yield home(subscriber.locale), subscriber.email

    counts: Counter[str] = Counter()
    for locale, count in ledger.subscriber_locales(unfiltered_only=not everyone).items():
        counts[home(locale)] += count
    counts.update(locale for locale, _ in each())
    return Audience(counts, each, everyone, locales)


# -- what `broadcaster subscribers …` does -------------------------------------------------


def import_csv(settings: Settings, path: Path | None, *, resubscribe: bool) -> ImportReport:
    """Add or update subscribers from a CSV (default: `[channels.email] subscribers`); bad rows
    are reported with their line numbers and the good rows are kept. Read and saved a batch at
    a time (one transaction each), with a progress bar on a terminal."""
    from broadcaster.progress import reporter

    if path is None:
        if "email" not in settings.channels:
            raise InputError("no [channels.email] section: give the CSV file to import")
        path = settings.channels["email"].subscribers  # type: ignore[attr-defined]
    total = scan(path)
    progress = reporter.get()
    report = ImportReport()
    batches = parse_csv(path, settings, batch=IMPORT_BATCH)
    first = next(batches)  # a file that cannot be read creates no ledger
    with open_ledger(settings) as ledger:
        for rows, problems in itertools.chain([first], batches):
            report.add(save(ledger, [sub for _, sub in rows], resubscribe=resubscribe), problems)
            if progress and rows:
                progress("subscribers", rows[-1][0], total)
    if progress and total:
        progress("subscribers", total, total)
    return report


def add(settings: Settings, email: str, locale: str, components: Sequence[str], regions: Sequence[str],
        postcodes: Sequence[str]) -> ImportReport:
    """Add (or sign up again, or change) one subscriber."""
    subscriber = make_subscriber(email, locale, settings.known_names(components, "component"),
                                 settings.known_names(regions, "region"), settings.organization.locales,
                                 postcodes, keep_case=keeps_case(settings))
    with open_ledger(settings) as ledger:
        return save(ledger, [subscriber], resubscribe=True)


def remove(settings: Settings, email: str) -> Subscriber:
    """Unsubscribe one address; it stays on file so a later import does not add it back."""
    address = normalize_address(email, keep_case=keeps_case(settings))
    with open_ledger(settings) as ledger:
        removed = ledger.unsubscribe(email=address)
    if removed is None:
        raise InputError(f"{address} is not an active subscriber (see `broadcaster subscribers list`)")
    return removed


def listed(settings: Settings, *, each: bool = True) -> Roster:
    """How many subscribers are in each state and, with `each`, every one of them, active,
    unsubscribed or waiting to confirm (never their tokens)."""
    from datetime import UTC, datetime

    with open_ledger(settings, read_only=True) as ledger:
        pending = ledger.subscription_requests(pending_at=datetime.now(UTC))
        counts = {**ledger.subscriber_counts(), "pending": len(pending)}
    everyone = Streamed(settings, lambda ledger: ledger.each_subscriber())
    return Roster(counts, everyone if each else (), pending if each else ())
