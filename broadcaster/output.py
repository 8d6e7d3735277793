"""Printing a command's result: its text for a person, or its JSON for a script."""

from __future__ import annotations

import json
from itertools import islice

import typer

from broadcaster.report import Result

#: Lines of a streamed result printed at a time: one write each rather than one a line.
LINES_AT_ONCE = 1000


def print_result(result: Result, as_json: bool) -> int:
    """Print `result` (see `report.Result`) and return the exit code it calls for."""
    streamed = result.lines(as_json)
    if streamed is not None:  # a chunk at a time, as the ledger gives them
        while chunk := list(islice(streamed, LINES_AT_ONCE)):
            typer.echo("\n".join(chunk))
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
