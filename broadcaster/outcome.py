"""What a sending command did: `Outcome` for announce, update, resolve, publish, discard and
retry of one incident, `RetryReport` for `retry` of them all.

They keep the `Result` protocol of report.py, whose tables and JSON they reuse. They live apart
from the reading commands' results so that `list` and `show` do not define them at start-up.
`Outcome.to_json()` is the `--json` contract (BRIEF §4); `exit_code` is 0 when every delivery
is done, 3 when some are not and `broadcaster retry` can finish them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broadcaster.report import (
    DeliveryOutcome,
    MailingSummary,
    Result,
    deliveries_table,
    planned_json,
    preview_text,
    recipient_counts,
)

if TYPE_CHECKING:
    from broadcaster.preflight import Preview


@dataclass(frozen=True)
class Outcome(Result):
    """The result of announce, update, resolve, publish or retry for one incident."""

    incident_id: str
    update_id: str | None
    statement_url: str
    deliveries: Sequence[DeliveryOutcome] = ()
    dry_run: bool = False
    draft: bool = False
    preview: Preview | None = None
    warnings: Sequence[str] = field(default_factory=list)
    #: The draft was revised in place rather than added.
    revised: bool = False
    #: For `publish`: each update sent, in order, as (update id, label such as "#2 update · identified").
    published: Sequence[tuple[str, str]] = ()
    #: For `discard`: the draft updates set aside.
    discarded: Sequence[str] = ()
    #: Each update's mailing lists, in numbers (their recipients are not in `deliveries`).
    lists: Sequence[MailingSummary] = ()

    @property
    def exit_code(self) -> int:
        done = all(d.status in ("sent", "skipped") for d in self.deliveries)
        done = done and all(m.done for m in self.lists)
        return 0 if done or self.dry_run or self.draft else 3

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "incident_id": self.incident_id,
            "update_id": self.update_id,
            "statement_url": self.statement_url,
            "deliveries": [*(d.to_json() for d in self.deliveries),
                           *(entry for m in self.lists for entry in m.json_entries())],
        }
        if self.dry_run:
            out["dry_run"] = True
        if self.draft:
            out["draft"] = True
            out["revised"] = self.revised
        if self.discarded:
            out["discarded"] = list(self.discarded)
        if self.published:
            out["published"] = [{"update_id": uid, "label": label} for uid, label in self.published]
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.lists:
            out["recipients"] = recipient_counts(self.lists)
        if self.preview is not None:
            out["preview"] = planned_json(self.preview)
        return out

    def text(self) -> str:
        if self.dry_run and self.preview is not None:
            return preview_text(self.preview) + "\n\nDry run: nothing was recorded or sent."
        if self.discarded:
            count = len(self.discarded)
            return (f"Discarded {count} draft{'s' * (count != 1)} of incident {self.incident_id} "
                    f"({', '.join(self.discarded)}); nothing was sent. They stay in the ledger "
                    "for the record and appear nowhere else.")
        if self.draft:
            done = "revised in place" if self.revised else "recorded"
            return (f"Draft {done} for incident {self.incident_id}; nothing was sent.\n"
                    f"Review it with `broadcaster show {self.incident_id}`, "
                    f"send it with `broadcaster publish {self.incident_id}`.")
        lines = [f"Incident {self.incident_id} · update {self.update_id}",
                 f"Statement: {self.statement_url}", ""]
        if self.published:  # publish: one table per update, labelled, in the order they went out
            for update_id, label in self.published:
                lines.append(f"── {label}")
                lines.append(deliveries_table([d for d in self.deliveries if d.update_id == update_id],
                                              [m for m in self.lists if m.update_id == update_id]))
        else:
            lines.append(deliveries_table(self.deliveries, self.lists))
        return "\n".join(lines)

    def notes(self) -> list[str]:
        if (self.dry_run and self.preview is not None) or self.discarded:
            return []  # a dry run's warnings are in its preview
        notes = [f"warning: {w}" for w in self.warnings]
        if self.exit_code:
            notes.append(f"\nSome deliveries are not done. Run `broadcaster retry {self.incident_id}` "
                         "to finish them; nothing already sent is sent again.")
        return notes


@dataclass(frozen=True)
class RetryReport(Result):
    """What `retry` did, one outcome per incident it looked at."""

    outcomes: Sequence[Outcome]

    @property
    def exit_code(self) -> int:
        return max((o.exit_code for o in self.outcomes), default=0)

    def to_json(self) -> dict[str, Any]:
        return {"incidents": [o.to_json() for o in self.outcomes]}

    def text(self) -> str:
        if not self.outcomes:
            return "Nothing to retry: every delivery is done."
        return "\n\n".join(o.text() for o in self.outcomes)

    def notes(self) -> list[str]:
        return [note for o in self.outcomes for note in o.notes()]
