"""What a command did: the result objects the Python API returns and the CLI prints.

Every result keeps one protocol (`Result`): `text()` for a person (and `notes()`, the
warnings and what to do next, for stderr), `to_json()` for a script, and `exit_code` for the
shell. This module holds the protocol, the deliveries tables every result shows, and the
results of the reading commands (`list`, `show`); the sending commands' `Outcome` is in
outcome.py. Nothing here is a dataclass: `list` and `show` start without defining one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from broadcaster.model import Delivery, DeliveryState, Incident

if TYPE_CHECKING:
    from broadcaster.ledger import DeliveryCount, Ledger
    from broadcaster.preflight import Preview


class Result:
    """The protocol every command's result keeps; `output.print_result` is all the printing."""

    @property
    def exit_code(self) -> int:
        return 0

    def to_json(self) -> Any:
        raise NotImplementedError

    def text(self) -> str:
        """What a person reads on stdout ("" for nothing)."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Warnings and what to do next, for stderr (so a pipe gets only the text)."""
        return []

    def lines(self, as_json: bool) -> Iterator[str] | None:
        """The output a line at a time, for a result read from the ledger as it is printed (a
        million rows are never held at once); None: `text()` or `to_json()` is printed whole."""
        return None


def json_array(items: Iterable[Any]) -> Iterator[str]:
    """The text of `json.dumps(list(items), indent=2, ensure_ascii=False)`, an item at a time
    (lines to print, each item's closing line with its comma), never holding the list."""
    import json

    def indented(item: Any) -> str:
        return "  " + json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  ")

    it = iter(items)
    held = next(it, _NOTHING)
    if held is _NOTHING:
        yield "[]"
        return
    yield "["
    for item in it:
        yield indented(held) + ","
        held = item
    yield indented(held)
    yield "]"


_NOTHING = object()


#: How a person reads a delivery's state (in flight is pending: not done, `retry` finishes it).
_STATUS = {DeliveryState.SENT: "sent", DeliveryState.FAILED: "failed", DeliveryState.SKIPPED: "skipped"}

WAITING_FOR_STATEMENT = "waiting for the statement to be published; `broadcaster retry` sends it"


class DeliveryOutcome(NamedTuple):
    channel: str
    status: str  # sent | failed | skipped | pending
    url: str | None = None
    error: str | None = None
    locale: str = ""
    recipient: str = ""
    attempts: int = 0
    update_id: str | None = None
    #: What the operator should know about a delivery that went out differently (X refused
    #: a reply, so the post stands alone).
    note: str | None = None

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOutcome:
        status = _STATUS.get(delivery.state, "pending")
        error = delivery.error
        if delivery.state is DeliveryState.PENDING and not error:
            error = WAITING_FOR_STATEMENT
        note = delivery.meta.get("note")
        return cls(
            delivery.channel, status, delivery.url, error, delivery.locale,
            delivery.recipient, delivery.attempts, delivery.update_id,
            str(note) if note else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channel": self.channel,
            "status": self.status,
            "url": self.url,
            "error": self.error,
            "locale": self.locale,
            "attempts": self.attempts,
            "update_id": self.update_id,
        }
        if self.recipient:
            out["recipient"] = self.recipient
        if self.note:
            out["note"] = self.note
        return out


#: Recipients of a mailing list still to do that a report names (`show --recipients` lists all).
LISTED_RECIPIENTS = 100


class MailingSummary(NamedTuple):
    """One update's mailing list on one channel, in numbers: how many recipients are in each
    state, the most attempts any took, and the first of those still to do (failed or pending).
    Counted in the ledger (GROUP BY): a report on a list of a million holds a few numbers."""

    update_id: str
    channel: str
    counts: Mapping[str, int]
    attempts: int
    unfinished: Sequence[DeliveryOutcome] = ()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> bool:
        return not (self.counts.get("failed") or self.counts.get("pending"))

    @property
    def status(self) -> str:
        return "failed" if self.counts.get("failed") else "pending" if self.counts.get("pending") else "sent"

    def to_json(self) -> dict[str, Any]:
        """The list as one delivery among the others (no `recipient`; `recipients` counts them),
        followed in `deliveries` by the first recipients still to do, each with `recipient`."""
        return {"channel": self.channel, "status": self.status, "url": None,
                "error": next((d.error for d in self.unfinished if d.error), None), "locale": "",
                "attempts": self.attempts, "update_id": self.update_id, "recipients": dict(self.counts)}

    def json_entries(self) -> list[dict[str, Any]]:
        return [self.to_json(), *(d.to_json() for d in self.unfinished)]


def mailing_lists(ledger: Ledger, incident_id: str) -> list[str]:
    """Which of the incident's channels are mailing lists, as the ledger remembers them, so
    that reading an incident imports no channel (a channel the ledger has no kind for, recorded
    before it kept them, is looked up in the registry)."""
    names = ledger.channel_kinds()
    used = ledger.channels_of(incident_id)
    if all(n in names for n in used):
        return [n for n in used if names[n]]
    from broadcaster import registry

    return [n for n in used if n in registry.mailing_lists()]


def mailing_summaries(ledger: Ledger, *, update_id: str, lists: Sequence[str]) -> list[MailingSummary]:
    """The update's mailing lists (deliveries on the channels `lists` names), per channel, with
    the first recipients still to do."""
    by_channel: dict[str, list[DeliveryCount]] = {}
    for c in ledger.delivery_counts(channels=lists, update_id=update_id):
        by_channel.setdefault(c.channel, []).append(c)
    out = []
    for channel, counts in by_channel.items():
        states: Counter[str] = Counter()
        for c in counts:
            states[_STATUS.get(c.state, "pending")] += c.count
        unfinished: list[DeliveryOutcome] = []
        if states["failed"] or states["pending"]:
            unfinished = [DeliveryOutcome.of(d) for d in ledger.deliveries(
                update_id=update_id, channels=[channel], unfinished=True,
                limit=LISTED_RECIPIENTS)]
        out.append(MailingSummary(update_id, channel, dict(states), max(c.attempts for c in counts),
                                  unfinished))
    return out


def deliveries_table(deliveries: Sequence[DeliveryOutcome], lists: Sequence[MailingSummary] = (),
                     failures_shown: int = 10) -> str:
    """A plain table a person reads at 3 a.m.: channel, status, where it went, what failed.

    A mailing list is one line with its counts, followed by the first recipients that failed.
    """
    rows = [("CHANNEL", "STATUS", "ATTEMPTS", "WHERE / ERROR")]
    for d in deliveries:
        where = d.url if d.status == "sent" else d.error or ""
        if d.note:
            where = f"{where} ({d.note})"
        rows.append((f"{d.channel} → {d.recipient}" if d.recipient else d.channel, d.status,
                     str(d.attempts), where))
    for m in lists:
        summary = ", ".join(f"{n:,} {state}" for state, n in sorted(m.counts.items()))
        rows.append((m.channel, m.status, str(m.attempts),
                     f"{m.total:,} recipient{'s' * (m.total != 1)}: {summary}"))
        rows += [(f"  {d.recipient}", d.status, str(d.attempts), d.error or "")
                 for d in m.unfinished[:failures_shown]]
        left = m.counts.get("failed", 0) + m.counts.get("pending", 0)
        if left > failures_shown:
            rows.append(("", "", "", f"… and {left - failures_shown:,} more "
                                     "(`broadcaster show ID --recipients`)"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        ("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:3])) + "  " + (r[3] or "")).rstrip()
        for r in rows
    )


def recipient_counts(lists: Sequence[MailingSummary]) -> dict[str, dict[str, int]]:
    """Per channel, how many recipients are in each state (every update's lists added up)."""
    totals: dict[str, Counter[str]] = {}
    for m in lists:
        totals.setdefault(m.channel, Counter()).update(m.counts)
    return {channel: dict(counts) for channel, counts in totals.items()}


def preview_text(preview: Preview) -> str:
    """Every post exactly as it will go out, with its length against the channel's limit."""
    update = preview.update
    lines = [
        f"Incident {preview.incident.id}: {update.kind} · {update.status} · {update.impact}",
        f"Statement: {preview.statement_url}",
    ]
    for planned in preview.planned:
        lines.append("")
        if planned.post.files:
            lines.append(f"── {planned.channel}: the statement says")
            lines.extend(f"   {line}" for line in planned.post.text.splitlines())
            lines.append(f"── {planned.channel}: {len(planned.post.files)} files")
            lines.extend(f"   {path}" for path in sorted(planned.post.files))
            continue
        limit = f"{planned.length}/{planned.limit}" if planned.limit else f"{planned.length} chars"
        if planned.recipients:
            count = planned.recipients
            limit = f"to {count:,} subscriber{'s' * (count != 1)}"
        if planned.post.cost is not None:
            posts = 1 + len(planned.post.continuation)
            limit += f" · {posts} post{'s' * (posts != 1)}, about ${planned.post.cost:.2f}"
        if planned.destinations != ("",):
            limit += f" · to {', '.join(planned.destinations)}"
        lines.append(f"── {planned.channel} ({planned.locale}) · {limit}")
        if planned.post.subject:
            lines.append(f"   Subject: {planned.post.subject}")
        lines.extend(f"   {line}" for line in planned.post.shown(planned.post.text).splitlines())
        for number, reply in enumerate(planned.post.continuation, start=2):
            lines.append(f"   ↳ reply {number}:")
            lines.extend(f"   {line}" for line in reply.splitlines())
    if preview.warnings:
        lines.append("")
        lines.extend(f"warning: {w}" for w in preview.warnings)
    return "\n".join(lines)


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


class IncidentReport(Result):
    """An incident as `list` and `show` report it.

    `deliveries` are its posts, `lists` each update's mailing lists in numbers (`show
    --recipients` lists every recipient), `previews` (drafts only) each draft update as every
    channel would send it or why it cannot be, and `local_time` how a person reads a time: in
    the organisation's zone, named (see OrganizationSettings).
    """

    def __init__(self, incident: Incident, statement_url: str,
                 deliveries: Sequence[DeliveryOutcome] = (), lists: Sequence[MailingSummary] = (),
                 previews: Sequence[Preview | str] = (),
                 local_time: Callable[[datetime], str] = _utc) -> None:
        self.incident = incident
        self.statement_url = statement_url
        self.deliveries = deliveries
        self.lists = lists
        self.previews = previews
        self.local_time = local_time

    def to_json(self) -> dict[str, Any]:
        i = self.incident
        default = next(iter(i.latest.texts))
        out: dict[str, Any] = {
            "id": i.id,
            "title": i.title(default),
            "status": i.status.value,
            "impact": i.impact.value,
            "components": list(i.components),
            "regions": list(i.regions),
            "draft": i.is_draft,
            "drafts_waiting": len(i.drafts),
            "created_at": i.created_at.isoformat(),
            "updated_at": i.updated_at.isoformat(),
            "statement_url": self.statement_url,
            "updates": [
                {
                    "id": u.id,
                    "kind": u.kind.value,
                    "status": u.status.value,
                    "impact": u.impact.value,
                    "draft": u.draft,
                    "created_at": u.created_at.isoformat(),
                    "next_update_at": u.next_update_at.isoformat() if u.next_update_at else None,
                    "texts": {loc: t._asdict() for loc, t in u.texts.items()},
                    "deliveries": [*(d.to_json() for d in self.deliveries if d.update_id == u.id),
                                   *(entry for m in self.lists if m.update_id == u.id
                                     for entry in m.json_entries())],
                    **({"recipients": recipient_counts(mine)}
                       if (mine := [m for m in self.lists if m.update_id == u.id]) else {}),
                }
                for u in i.updates
            ],
        }
        if self.previews:
            out["previews"] = [
                {"problems": p} if isinstance(p, str) else
                {"update_id": p.update.id, "planned": planned_json(p), "warnings": list(p.warnings)}
                for p in self.previews
            ]
        return out

    def text(self) -> str:
        i = self.incident
        default = next(iter(i.latest.texts))
        lines = [
            f"{i.title(default)}",
            f"id {i.id} · {'draft' if i.is_draft else i.status.value} · impact {i.impact.value}",
            f"statement {self.statement_url}",
        ]
        if i.components:
            lines.append(f"components {', '.join(i.components)}")
        if i.regions:
            lines.append(f"regions {', '.join(i.regions)}")
        for u in i.updates:
            lines.append("")
            lines.append(f"#{u.seq} {u.kind.value} · {u.status.value} · {self.local_time(u.created_at)}"
                         + (" · draft" if u.draft else ""))
            lines.extend(f"   {line}" for line in u.text(default).message.splitlines())
            mine = [d for d in self.deliveries if d.update_id == u.id]
            lists = [m for m in self.lists if m.update_id == u.id]
            if mine or lists:
                lines.extend("   " + row for row in deliveries_table(mine, lists).splitlines())
        for preview in self.previews:
            lines += ["", "── what `broadcaster publish` would send ──"]
            lines += [preview] if isinstance(preview, str) else preview_text(preview).splitlines()
        return "\n".join(lines)


class RecipientListing(Result):
    """`broadcaster show ID --recipients`: every recipient of the incident's mailing lists, one
    line each (tab-separated, or JSON Lines), printed as they are read from the ledger."""

    COLUMNS = ("update_id", "channel", "locale", "recipient", "status", "attempts", "error")

    def __init__(self, rows: Iterable[DeliveryOutcome]) -> None:
        self.rows = rows

    def lines(self, as_json: bool) -> Iterator[str]:
        import json

        if not as_json:
            yield "\t".join(c.upper() for c in self.COLUMNS)
        for d in self.rows:
            out = d.to_json()
            if as_json:
                yield json.dumps(out, ensure_ascii=False)
            else:
                yield "\t".join("" if out.get(c) is None else str(out[c]).replace("\t", " ")
                                for c in self.COLUMNS)

    def to_json(self) -> list[dict[str, Any]]:
        return [d.to_json() for d in self.rows]

    def text(self) -> str:
        return "\n".join(self.lines(False))


class IncidentList(Result):
    """`broadcaster list`: one line per incident; drafts are marked and counted, so none waits
    unseen at 3 a.m."""

    def __init__(self, reports: Sequence[IncidentReport]) -> None:
        self.reports = reports

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.reports]

    def text(self) -> str:
        if not self.reports:
            return "No incidents."
        rows = [("ID", "STATUS", "IMPACT", "UPDATED", "TITLE")]
        waiting = 0
        for r in self.reports:
            i = r.incident
            status = "DRAFT" if i.is_draft else i.status.value + (" + DRAFT" if i.drafts else "")
            waiting += bool(i.drafts)
            title = i.title(next(iter(i.latest.texts)))
            rows.append((i.id, status, i.impact.value, r.local_time(i.updated_at), title))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        lines = ["  ".join(row[c].ljust(widths[c]) for c in range(4)) + "  " + row[4] for row in rows]
        if waiting:
            lines += ["", f"{waiting} incident{'s' * (waiting != 1)} with a draft waiting for review: "
                          "`broadcaster show ID`, then `broadcaster publish ID` or `broadcaster discard ID`."]
        return "\n".join(lines)


def planned_json(preview: Preview) -> list[dict[str, Any]]:
    return [
        {
            "channel": p.channel,
            "locale": p.locale,
            "text": p.post.shown(p.post.text),
            "length": p.length,
            "limit": p.limit,
            "files": sorted(p.post.files),
            "replies": list(p.post.continuation),
            **({"recipients": p.recipients} if p.recipients else {}),
            **({"destinations": list(p.destinations)} if p.destinations != ("",) else {}),
            **({"subject": p.post.subject} if p.post.subject else {}),
            **({"cost_usd": p.post.cost} if p.post.cost is not None else {}),
        }
        for p in preview.planned
    ]
