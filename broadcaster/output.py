"""Printing a command's result, as text for a person or as JSON for a script."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import typer

from broadcaster.report import IncidentReport, Outcome, RetryReport, deliveries_table, preview_text


def print_result(result: Any, as_json: bool) -> int:
    """Print `result` and return the exit code it calls for."""
    if isinstance(result, Outcome):
        return _outcome(result, as_json)
    if isinstance(result, IncidentReport):
        return _emit(result.to_json(), as_json, lambda: _incident_text(result))
    if isinstance(result, RetryReport):
        if as_json:
            typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        elif not result.outcomes:
            typer.echo("Nothing to retry: every delivery is done.")
        for outcome in [] if as_json else result.outcomes:
            _outcome(outcome, False)
            typer.echo("")
        return result.exit_code
    if isinstance(result, list):
        return _emit([r.to_json() for r in result], as_json, lambda: _incidents_text(result))
    if hasattr(result, "to_json"):
        if as_json:
            typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        elif hasattr(result, "text"):
            typer.echo(result.text())
        return int(getattr(result, "exit_code", 0))
    return 0


def _emit(data: Any, as_json: bool, text: Any) -> int:
    typer.echo(json.dumps(data, indent=2) if as_json else text())
    return 0


def _outcome(outcome: Outcome, as_json: bool) -> int:
    if as_json:
        typer.echo(json.dumps(outcome.to_json(), indent=2, ensure_ascii=False))
        return outcome.exit_code
    if outcome.dry_run and outcome.preview is not None:
        typer.echo(preview_text(outcome.preview))
        typer.echo("\nDry run: nothing was recorded or sent.")
        return 0
    if outcome.discarded:
        count = len(outcome.discarded)
        typer.echo(f"Discarded {count} draft{'s' * (count != 1)} of incident {outcome.incident_id} "
                   f"({', '.join(outcome.discarded)}); nothing was sent. They stay in the ledger "
                   "for the record and appear nowhere else.")
        return 0
    if outcome.draft:
        done = "revised in place" if outcome.revised else "recorded"
        typer.echo(f"Draft {done} for incident {outcome.incident_id}; nothing was sent.")
        for warning in outcome.warnings:
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(f"Review it with `broadcaster show {outcome.incident_id}`, "
                   f"send it with `broadcaster publish {outcome.incident_id}`.")
        return 0
    typer.echo(f"Incident {outcome.incident_id} · update {outcome.update_id}")
    typer.echo(f"Statement: {outcome.statement_url}\n")
    if outcome.published:  # publish: one table per update, labelled, in the order they went out
        for update_id, label in outcome.published:
            typer.echo(f"── {label}")
            typer.echo(deliveries_table([d for d in outcome.deliveries if d.update_id == update_id]))
    else:
        typer.echo(deliveries_table(outcome.deliveries))
    for warning in outcome.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if outcome.exit_code:
        typer.echo(f"\nSome deliveries are not done. Run `broadcaster retry {outcome.incident_id}` "
                   "to finish them; nothing already sent is sent again.", err=True)
    return outcome.exit_code


def _incidents_text(reports: Sequence[IncidentReport]) -> str:
    """One line per incident; drafts are marked and counted, so none waits unseen at 3 a.m."""
    if not reports:
        return "No incidents."
    rows = [("ID", "STATUS", "IMPACT", "UPDATED", "TITLE")]
    waiting = 0
    for r in reports:
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


def _incident_text(report: IncidentReport) -> str:
    i = report.incident
    default = next(iter(i.latest.texts))
    lines = [
        f"{i.title(default)}",
        f"id {i.id} · {'draft' if i.is_draft else i.status.value} · impact {i.impact.value}",
        f"statement {report.statement_url}",
    ]
    if i.components:
        lines.append(f"components {', '.join(i.components)}")
    if i.regions:
        lines.append(f"regions {', '.join(i.regions)}")
    for u in i.updates:
        lines.append("")
        lines.append(f"#{u.seq} {u.kind.value} · {u.status.value} · {report.local_time(u.created_at)}"
                     + (" · draft" if u.draft else ""))
        for line in u.text(default).message.splitlines():
            lines.append(f"   {line}")
        mine = [d for d in report.deliveries if d.update_id == u.id]
        if mine:
            lines.extend("   " + row for row in deliveries_table(mine).splitlines())
    for preview in report.previews:
        lines += ["", "── what `broadcaster publish` would send ──"]
        lines += [preview] if isinstance(preview, str) else preview_text(preview).splitlines()
    return "\n".join(lines)

