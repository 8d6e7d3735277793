"""Printing a command's result: its text for a person, or its JSON for a script."""

from __future__ import annotations

import json

import typer

from broadcaster.report import RecipientListing, Result


def print_result(result: Result, as_json: bool) -> int:
    """Print `result` (see `report.Result`) and return the exit code it calls for."""
    if isinstance(result, RecipientListing):  # a line at a time, as the ledger gives them
        for line in result.lines(as_json):
            typer.echo(line)
        return result.exit_code
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return result.exit_code
    text = result.text()
    if text:
        typer.echo(text)
    for note in result.notes():
        typer.echo(note, err=True)
    return result.exit_code
