"""The `broadcaster` command: parse, call the Python API, print. Nothing else lives here.

Start-up matters (an operator runs this under pressure, a hook runs it often), so this module
imports only typer and the model's enums; everything else is imported by the command that
needs it. Exit codes: 0 done, 2 bad input (nothing sent), 3 partly delivered (`retry`
finishes), 1 unexpected.
"""

from __future__ import annotations

import copy
import inspect
import os

# Typer's rich help costs ~60 ms at every start; plain help reads as well. Still overridable.
os.environ.setdefault("TYPER_USE_RICH", "0")

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.models import CommandInfo

from broadcaster import defaults
from broadcaster.vocabulary import Impact, UpdateStatus

if TYPE_CHECKING:
    from broadcaster.outcome import Outcome
    from broadcaster.preflight import Preview

app = typer.Typer(
    help="Announce a service incident once: the official statement on your own site first, "
    "then every channel your customers watch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_config: dict[str, Path | None] = {"path": None}

# Per-locale words beyond the default locale's: --title-es, --message-es, --guidance-es, --apology-es.
_LOCALE_FIELDS = ("title", "message", "guidance", "apology")
_EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}

Json = Annotated[bool, typer.Option("--json", help="Print one JSON object (see README) instead of text.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Send without showing the preview and asking.")]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Render and validate every channel; record and send nothing.",
    ),
]
Draft = Annotated[
    bool,
    typer.Option(
        "--draft",
        help="Record as a draft to approve later with `publish`; send nothing.",
    ),
]
Channels = Annotated[
    list[str] | None,
    typer.Option(
        "--channel",
        help="Send only to this channel (repeatable); the website always publishes.",
    ),
]
Components = Annotated[
    list[str] | None,
    typer.Option(
        "--component",
        help="An affected component (repeatable).",
    ),
]
Regions = Annotated[list[str] | None, typer.Option("--region", help="An affected region (repeatable).")]
Guidance = Annotated[str, typer.Option("--guidance", help="What customers can do now (Markdown).")]
NextUpdate = Annotated[
    str | None,
    typer.Option(
        "--next-update",
        help="When the next update is promised: 30m, 1h30m, 14:30 or an ISO date.",
    ),
]
MessageFile = Annotated[
    Path | None,
    typer.Option(
        "--message-file",
        help="TOML file with one table per locale: [es] title, message, guidance, apology.",
    ),
]
Starts = Annotated[str, typer.Option(
    "--starts", help="Start of the window, ISO (local time unless it has an offset).", show_default=False)]
Ends = Annotated[str, typer.Option("--ends", help="End of the window, ISO.", show_default=False)]
IncidentArg = Annotated[
    str,
    typer.Argument(
        help="The incident id (see `broadcaster list`).",
        show_default=False,
    ),
]


@app.callback()
def _global(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Settings file [default: $BROADCASTER_CONFIG or ./settings.toml]."),
    ] = None,
) -> None:
    _config["path"] = config


@app.command(context_settings=_EXTRA_ARGS)
def announce(
    ctx: typer.Context,
    title: Annotated[str | None, typer.Option("--title", help="Short title of the incident.")] = None,
    message: Annotated[str | None, typer.Option("--message", help="What is happening (Markdown).")] = None,
    impact: Annotated[Impact, typer.Option("--impact", help="How bad it is for customers.")] = Impact.MINOR,
    component: Components = None,
    region: Regions = None,
    guidance: Guidance = "",
    next_update: NextUpdate = None,
    message_file: MessageFile = None,
    channel: Channels = None,
    dry_run: DryRun = False,
    draft: Draft = False,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Announce a new incident. Per-locale text: --title-es, --message-es … or --message-file."""

    def run() -> Outcome:
        from broadcaster import api

        return api.announce(
            title or "", message or "", impact=impact, components=component or (),
            regions=region or (), guidance=guidance, next_update=next_update,
            translations=_words(ctx, message_file), channels=channel,
            dry_run=dry_run, draft=draft, confirm=_confirmation(yes, dry_run, json),
            settings=_config["path"],
        )

    _finish(run, json)


@app.command(context_settings=_EXTRA_ARGS)
def update(
    ctx: typer.Context,
    incident: IncidentArg,
    status: Annotated[
        UpdateStatus, typer.Option("--status", help="investigating, identified or monitoring.")
    ],
    message: Annotated[str | None, typer.Option("--message", help="What changed (Markdown).")] = None,
    title: Annotated[str | None, typer.Option("--title", help="A new title, if it should change.")] = None,
    impact: Annotated[Impact | None, typer.Option("--impact", help="A new impact, if it changed.")] = None,
    component: Components = None,
    region: Regions = None,
    guidance: Annotated[str, typer.Option(
        "--guidance", help="What customers can do now (Markdown); replaces the guidance so far.")] = "",
    clear_guidance: Annotated[bool, typer.Option(
        "--clear-guidance", help="Drop the guidance carried over from earlier updates.")] = False,
    next_update: NextUpdate = None,
    message_file: MessageFile = None,
    channel: Channels = None,
    dry_run: DryRun = False,
    draft: Draft = False,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Post an update to an open incident; it continues each channel's thread.

    The guidance carries over until --guidance replaces it or --clear-guidance drops it. On an
    incident whose latest update is a draft, --draft revises that draft in place.
    """

    def run() -> Outcome:
        from broadcaster import api

        return api.update(
            incident, message or "", status=status, title=title, impact=impact,
            components=component, regions=region, guidance=guidance,
            clear_guidance=clear_guidance, next_update=next_update,
            translations=_words(ctx, message_file), channels=channel, dry_run=dry_run, draft=draft,
            confirm=_confirmation(yes, dry_run, json), settings=_config["path"],
        )

    _finish(run, json)


@app.command(context_settings=_EXTRA_ARGS)
def resolve(
    ctx: typer.Context,
    incident: IncidentArg,
    message: Annotated[
        str | None,
        typer.Option(
            "--message",
            help="What happened and what was fixed (Markdown).",
        ),
    ] = None,
    apology: Annotated[str, typer.Option("--apology", help="The apology (Markdown).")] = "",
    no_apology: Annotated[bool, typer.Option(
        "--no-apology", help="Resolve a major or critical incident without an apology, on purpose.")] = False,
    guidance: Annotated[str, typer.Option(
        "--guidance", help="What customers should still do (Markdown); earlier guidance ends here.")] = "",
    title: Annotated[str | None, typer.Option("--title", help="A final title, if it should change.")] = None,
    message_file: MessageFile = None,
    channel: Channels = None,
    dry_run: DryRun = False,
    draft: Draft = False,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Resolve an incident, with the explanation and the apology."""

    def run() -> Outcome:
        from broadcaster import api

        return api.resolve(
            incident, message or "", apology=apology, no_apology=no_apology, guidance=guidance,
            title=title,
            translations=_words(ctx, message_file), channels=channel,
            dry_run=dry_run, draft=draft, confirm=_confirmation(yes, dry_run, json),
            settings=_config["path"],
        )

    _finish(run, json)


@app.command(context_settings=_EXTRA_ARGS)
def postmortem(
    ctx: typer.Context,
    incident: IncidentArg,
    file: Annotated[Path, typer.Option(
        "--file", help="The postmortem in Markdown (the default locale's); other locales: "
        "--file-es PM.es.md …", show_default=False)],
    revise: Annotated[bool, typer.Option(
        "--revise", help="Correct the published postmortem on the statement page only "
        "(nobody is told again).")] = False,
    channel: Channels = None,
    dry_run: DryRun = False,
    draft: Draft = False,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Publish a resolved incident's postmortem: a section of its statement page, and a reply
    in its thread on every channel. Review it first with --draft, `show`, then `publish`."""

    def run() -> Outcome:
        from broadcaster import api
        from broadcaster.message_file import read_markdown_file

        translations = {locale: read_markdown_file(path, f"--file-{locale}")
                        for locale, path in _files(ctx).items()}
        return api.postmortem(
            incident, read_markdown_file(file, "--file"), translations=translations, revise=revise,
            channels=channel, dry_run=dry_run, draft=draft, confirm=_confirmation(yes, dry_run, json),
            settings=_config["path"],
        )

    _finish(run, json)


@app.command()
def publish(incident: IncidentArg, channel: Channels = None, yes: Yes = False, json: Json = False) -> None:
    """Approve an incident's drafts and send them through every channel."""

    def run() -> Outcome:
        from broadcaster import api

        return api.publish(incident, channels=channel, confirm=_confirmation(yes, False, json),
                           settings=_config["path"])

    _finish(run, json)


@app.command()
def discard(incident: IncidentArg, json: Json = False) -> None:
    """Drop an incident's unpublished drafts (a false alarm); kept in the ledger for the record."""

    def run() -> Outcome:
        from broadcaster import api

        return api.discard(incident, settings=_config["path"])

    _finish(run, json)


@app.command()
def retry(
    incident: Annotated[
        str | None,
        typer.Argument(
            help="Only this incident (default: every unfinished one).",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Finish failed or interrupted deliveries. Never sends anything twice."""

    def run() -> Any:
        from broadcaster import api
        from broadcaster.outcome import RetryReport

        outcomes = api.retry(incident, settings=_config["path"])
        return outcomes[0] if incident else RetryReport(outcomes)

    _finish(run, json)


@app.command("list")
def list_(
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents not yet resolved.")] = False,
    drafts: Annotated[bool, typer.Option("--drafts", help="Only incidents with a draft waiting.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = defaults.LIST_LIMIT,
    json: Json = False,
) -> None:
    """List incidents, most recently updated first; drafts are marked and counted."""

    def run() -> Any:
        from broadcaster import api
        from broadcaster.report import IncidentList

        return IncidentList(api.list_incidents(open_only=open_only, drafts=drafts, limit=limit,
                                               settings=_config["path"]))

    _finish(run, json)


@app.command()
def show(
    incident: IncidentArg,
    recipients: Annotated[
        bool,
        typer.Option("--recipients", help="List every email recipient and their delivery's state, one "
                     "per line (tab-separated; JSON Lines with --json), instead of the counts."),
    ] = False,
    json: Json = False,
) -> None:
    """Show an incident: its updates and where each was delivered."""

    def run() -> Any:
        from broadcaster import api

        if recipients:
            return api.recipients(incident, settings=_config["path"])
        return api.show(incident, settings=_config["path"])

    _finish(run, json)


@app.command()
def drill(
    hold: Annotated[
        bool,
        typer.Option(
            "--hold",
            help="Keep serving the site after the drill until Ctrl-C.",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="Folder for the drill's site and ledger [default: a new temporary folder].",
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Rehearse an incident end to end on local stand-ins: no credentials, no network."""

    def run() -> Any:
        from broadcaster.drill import run_drill

        return run_drill(output=output, hold=hold, quiet=json)

    _finish(run, json)


state_app = typer.Typer(help="The ledger, where broadcaster keeps its state ([state]).", no_args_is_help=True)
app.add_typer(state_app, name="state")


@state_app.command("migrate")
def state_migrate(json: Json = False) -> None:
    """Create or upgrade the ledger's schema now (any command also does it on first use).

    Safe to run from several hosts at once: the PostgreSQL ledger migrates under a lock.
    """

    def run() -> Any:
        from broadcaster import api

        return api.migrate_state(settings=_config["path"])

    _finish(run, json)


@state_app.command("export")
def state_export(
    file: Annotated[Path, typer.Argument(help="A new file to write (JSON Lines); never overwritten.")],
    json: Json = False,
) -> None:
    """Write the whole ledger to a file: every incident, delivery, subscriber and token.

    With `state import`, moves a ledger between stores (SQLite to PostgreSQL, or back). The
    file holds subscribers' unsubscribe tokens: it is readable by you only.
    """

    def run() -> Any:
        from broadcaster import api

        return api.export_state(file, settings=_config["path"])

    _finish(run, json)


@state_app.command("import")
def state_import(
    file: Annotated[Path, typer.Argument(help="A file written by `broadcaster state export`.")],
    json: Json = False,
) -> None:
    """Load an export into this ledger, which must be empty: all of it, or nothing."""

    def run() -> Any:
        from broadcaster import api

        return api.import_state(file, settings=_config["path"])

    _finish(run, json)


subscribers_app = typer.Typer(
    help="Manage email subscribers (kept in the ledger's database).", no_args_is_help=True,
)
app.add_typer(subscribers_app, name="subscribers")


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[
        Path | None,
        typer.Argument(help="CSV: email,locale,components,regions,postcodes "
                       "[default: [channels.email] subscribers]."),
    ] = None,
    resubscribe: Annotated[
        bool,
        typer.Option("--resubscribe", help="Also sign up again addresses that unsubscribed."),
    ] = False,
    json: Json = False,
) -> None:
    """Add or update subscribers from a CSV; bad rows are reported by line, good rows kept."""

    def run() -> Any:
        from broadcaster import api

        return api.import_subscribers(file, resubscribe=resubscribe, settings=_config["path"])

    _finish(run, json)


@subscribers_app.command("add")
def subscribers_add(
    email: Annotated[str, typer.Argument(help="The subscriber's address.", show_default=False)],
    locale: Annotated[str, typer.Option("--locale", help="Their language [default: the first locale].")] = "",
    component: Annotated[
        list[str] | None, typer.Option("--component", help="Follow only this component (repeatable).")
    ] = None,
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Follow only this region (repeatable).")
    ] = None,
    postcode: Annotated[
        list[str] | None, typer.Option("--postcode", help="Follow the regions of this postcode (repeatable).")
    ] = None,
    json: Json = False,
) -> None:
    """Add one subscriber (or sign them up again, or change what they follow)."""

    def run() -> Any:
        from broadcaster import api

        return api.add_subscriber(email, locale=locale, components=component or (),
                                  regions=region or (), postcodes=postcode or (), settings=_config["path"])

    _finish(run, json)


@subscribers_app.command("remove")
def subscribers_remove(
    email: Annotated[str, typer.Argument(help="The address to unsubscribe.", show_default=False)],
    json: Json = False,
) -> None:
    """Unsubscribe one address (kept on file, so an import does not add it back)."""

    def run() -> Any:
        from broadcaster import api
        from broadcaster.subscribers import SubscriberList

        return SubscriberList([api.remove_subscriber(email, settings=_config["path"])])

    _finish(run, json)


@subscribers_app.command("list")
def subscribers_list(json: Json = False) -> None:
    """How many are active, waiting to confirm and unsubscribed; --json lists each of them."""

    def run() -> Any:
        from broadcaster import api

        return api.list_subscribers(each=json, settings=_config["path"])

    _finish(run, json)


@subscribers_app.command("export")
def subscribers_export(
    email: Annotated[str, typer.Argument(help="The person's address.", show_default=False)],
    json: Json = False,
) -> None:
    """Everything held about one address (a data-protection request), as JSON."""

    def run() -> Any:
        from broadcaster import api

        return api.export_subscriber(email, settings=_config["path"])

    _finish(run, json)


@subscribers_app.command("erase")
def subscribers_erase(
    email: Annotated[str, typer.Argument(help="The person's address.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Erase without asking.")] = False,
    json: Json = False,
) -> None:
    """Erase a person entirely: subscription, consent, requests; unsent emails cancelled."""

    def run() -> Any:
        from broadcaster import api
        from broadcaster.errors import InputError

        if not yes:
            if not sys.stdin.isatty():
                raise InputError("not erasing without confirmation: stdin is not a terminal; pass --yes")
            if not typer.confirm(f"Erase everything held about {email}? This cannot be undone.",
                                 default=False, err=json):
                raise InputError("nothing erased")
        return api.erase_subscriber(email, settings=_config["path"])

    _finish(run, json)


maintenance_app = typer.Typer(help="Planned maintenance.", no_args_is_help=True)
app.add_typer(maintenance_app, name="maintenance")


@maintenance_app.command("schedule", context_settings=_EXTRA_ARGS)
def maintenance_schedule(
    ctx: typer.Context,
    title: Annotated[str | None, typer.Option("--title", help="What is maintained.")] = None,
    message: Annotated[str | None, typer.Option("--message", help="What customers will notice (Markdown).")]
    = None,
    starts: Starts = "",
    ends: Ends = "",
    component: Components = None,
    region: Regions = None,
    guidance: Annotated[str, typer.Option(
        "--guidance", help="What customers can do during the window (Markdown).")] = "",
    message_file: MessageFile = None,
    channel: Channels = None,
    dry_run: DryRun = False,
    draft: Draft = False,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Announce a maintenance window on every channel; `tick` starts and completes it."""

    def run() -> Outcome:
        from broadcaster import api

        return api.schedule_maintenance(
            title or "", message or "", starts=starts, ends=ends, components=component or (),
            regions=region or (), guidance=guidance, translations=_words(ctx, message_file), channels=channel,
            dry_run=dry_run, draft=draft, confirm=_confirmation(yes, dry_run, json),
            settings=_config["path"],
        )

    _finish(run, json)


@maintenance_app.command("cancel", context_settings=_EXTRA_ARGS)
def maintenance_cancel(
    ctx: typer.Context,
    incident: IncidentArg,
    message: Annotated[str | None, typer.Option(
        "--message", help="Why, or what happens instead (Markdown) [default: a standard notice].")] = None,
    message_file: MessageFile = None,
    channel: Channels = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Call off a planned maintenance; every channel, the site and the JSON say so."""

    def run() -> Outcome:
        from broadcaster import api

        return api.cancel_maintenance(
            incident, message=message or "", translations=_words(ctx, message_file), channels=channel,
            dry_run=dry_run, confirm=_confirmation(yes, dry_run, json), settings=_config["path"],
        )

    _finish(run, json)


@maintenance_app.command("reschedule", context_settings=_EXTRA_ARGS)
def maintenance_reschedule(
    ctx: typer.Context,
    incident: IncidentArg,
    starts: Starts = "",
    ends: Ends = "",
    message: Annotated[str | None, typer.Option(
        "--message", help="Why it moved (Markdown) [default: a standard notice].")] = None,
    message_file: MessageFile = None,
    channel: Channels = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Move a planned maintenance to a new window, announced on every channel."""

    def run() -> Outcome:
        from broadcaster import api

        return api.reschedule_maintenance(
            incident, starts=starts, ends=ends, message=message or "",
            translations=_words(ctx, message_file), channels=channel, dry_run=dry_run,
            confirm=_confirmation(yes, dry_run, json), settings=_config["path"],
        )

    _finish(run, json)


site_app = typer.Typer(help="The status site.", no_args_is_help=True)
app.add_typer(site_app, name="site")


@site_app.command("build")
def site_build(
    full: Annotated[bool, typer.Option(
        "--full", help="Render every page, even those made from unchanged inputs "
        "(after editing files in output_dir by hand).")] = False,
    json: Json = False,
) -> None:
    """Rewrite the whole status site from the ledger (unchanged files are left alone)."""

    def run() -> Any:
        from broadcaster import api

        return api.build_site(full=full, settings=_config["path"])

    _finish(run, json)


@app.command()
def tick(json: Json = False) -> None:
    """Do what falls due: start and complete maintenance windows, remind staff of overdue
    promised updates. Cron-safe, every minute."""

    def run() -> Any:
        from broadcaster import api

        return api.tick(settings=_config["path"])

    _finish(run, json)


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Stop when nothing is left to take, "
                                       "instead of waiting for more.")] = False,
    json: Json = False,
) -> None:
    """Send what nobody is sending: join large email fan-outs, and finish what a killed
    command or worker left. Run any number, on any host ([worker] settings); stops cleanly on
    Ctrl-C or SIGTERM, after the batch in hand."""

    def run() -> Any:
        import signal
        import threading

        from broadcaster import api

        stop = threading.Event()

        def graceful(signum: int, frame: object) -> None:
            print("worker: stopping after the batch in hand…", file=sys.stderr)
            stop.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, graceful)

        def say(line: str) -> None:
            print(f"worker: {line}", file=sys.stderr, flush=True)

        return api.worker(once=once, stop=stop, say=say, settings=_config["path"])

    _finish(run, json)


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve the signed alert hooks, one-click unsubscribe and /healthz (needs BROADCASTER_HOOK_SECRET)."""

    def run() -> Any:
        from broadcaster.server import run as serve_forever
        from broadcaster.settings import load_settings

        serve_forever(load_settings(_config["path"]), host, port)

    _finish(run, False)


# -- helpers ----------------------------------------------------------------------------------


def _words(ctx: typer.Context, message_file: Path | None) -> dict[str, dict[str, str]]:
    """Words per locale from --message-file and --FIELD-LOCALE options (--message-es …)."""
    from broadcaster.message_file import read_message_file

    per_locale = read_message_file(message_file) if message_file else {}
    for name, value in _extra_options(ctx, lambda name: name.partition("-")[0] in _LOCALE_FIELDS):
        field, _, locale = name.partition("-")
        per_locale.setdefault(locale, {})[field] = value
    return per_locale


def _files(ctx: typer.Context) -> dict[str, Path]:
    """Files per locale from --file-LOCALE options (--file-es PM.es.md)."""
    from broadcaster.errors import InputError

    found: dict[str, Path] = {}
    for name, value in _extra_options(ctx, lambda name: name.startswith("file-")):
        locale = name.removeprefix("file-")
        if locale in found:
            raise InputError(f"--{name} given twice")
        found[locale] = Path(value)
    return found


def _extra_options(ctx: typer.Context, accepts: Callable[[str], bool]) -> list[tuple[str, str]]:
    """The per-locale options typer let through (`--NAME-LOCALE value` or `=value`), as
    (NAME-LOCALE, value); anything else is refused, naming it."""
    from broadcaster.errors import InputError

    found = []
    args = list(ctx.args)
    while args:
        arg = args.pop(0)
        option, _, value = arg.partition("=")
        name = option.removeprefix("--")
        if not option.startswith("--") or "-" not in name.strip("-") or not accepts(name):
            raise InputError(f"unknown option or extra argument: {arg!r} (see --help)")
        if not value:
            if not args:
                raise InputError(f"{option} needs a value")
            value = args.pop(0)
        found.append((name, value))
    return found


def _confirmation(yes: bool, dry_run: bool, json: bool) -> Callable[[Preview], bool] | None:
    """Without --yes, a person must see the preview and say yes; a script must pass --yes."""
    if yes or dry_run:
        return None

    def confirm(preview: Preview) -> bool:
        from broadcaster.errors import InputError
        from broadcaster.report import preview_text

        if not sys.stdin.isatty():
            raise InputError("not sending without confirmation: stdin is not a terminal; "
                             "check with --dry-run, then pass --yes")
        typer.echo(preview_text(preview), err=json)
        return typer.confirm("\nSend this now?", default=False, err=json)

    return confirm


def _finish(run: Callable[[], Any], json: bool) -> None:
    """Run a command, print its result, and exit with the contract's code."""
    from broadcaster.errors import BroadcasterError, InputError, LedgerWriteError

    if sys.stderr.isatty():
        from broadcaster.progress import reporter, terminal_bar

        reporter.set(terminal_bar())
    try:
        result = run()
    except InputError as exc:
        _fail(str(exc), 2, json)
    except LedgerWriteError as exc:  # some deliveries may be done: `retry` finishes the rest
        _fail(str(exc), 3, json)
    except BroadcasterError as exc:
        _fail(str(exc), 1, json)
    except KeyboardInterrupt:
        _fail("interrupted; unfinished deliveries stay in the ledger for `broadcaster retry`", 130, json)
    except Exception as exc:
        _fail(f"unexpected error ({type(exc).__name__}): {exc}. Please report it.", 1, json)
    from broadcaster.output import print_result

    raise typer.Exit(print_result(result, json))


def _fail(message: str, code: int, json: bool) -> None:
    from broadcaster.masking import mask, secrets_in_environment

    message = mask(message, secrets_in_environment())
    if json:
        import json as json_module

        typer.echo(json_module.dumps({"error": message, "exit_code": code}))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the `broadcaster` command."""
    only(sys.argv[1:])()


def only(argv: Sequence[str]) -> typer.Typer:
    """The app with only the command (or group) that `argv` names: Click's lazily loaded
    subcommands, done at the root. Typer reads every command's signature and options when it
    builds the app, about 40 ms for all of them (more than `list` takes to run), so a command
    is built alone. Without a command (the root's help), or with a name that is none, every
    command is there, but as its name and help only (`_index`): enough to list them, or to
    say there is no such one."""
    rest = list(argv)
    while rest and rest[0].startswith("--config"):
        rest = rest[1:] if "=" in rest[0] else rest[2:]
    lean = copy.copy(app)
    if rest and not rest[0].startswith("-"):
        lean.registered_commands = [c for c in app.registered_commands if _name(c) == rest[0]]
        lean.registered_groups = [g for g in app.registered_groups if g.name == rest[0]]
        if lean.registered_commands or lean.registered_groups:
            return lean
    lean.registered_commands, lean.registered_groups = _index(), []
    return lean


def command_names() -> list[list[str]]:
    """Every command, group and subcommand, as the words that name it (`["state", "export"]`),
    in the order the help lists them: what `test_startup.py` and `bench/startup.py` go through."""
    names = [[_name(command)] for command in app.registered_commands]
    for group in app.registered_groups:
        names.append([group.name or ""])
        names += [[group.name or "", _name(c)] for c in group.typer_instance.registered_commands]
    return names


def _name(command: CommandInfo) -> str:
    """A command's name as typer gives it: its own, or its function's with - for _."""
    return command.name or (command.callback.__name__ if command.callback else "").replace("_", "-")


def _index() -> list[CommandInfo]:
    """Every command and group as a command without options that has its name and help: what
    the root's help lists, in the order typer lists them (commands, then groups)."""

    def listed() -> None:  # never run: a command named alone is built whole
        raise AssertionError("an index entry was invoked")

    entries = []
    for command in app.registered_commands:
        entry = copy.copy(command)
        entry.name, entry.callback = _name(command), listed
        entry.help = command.help or inspect.getdoc(command.callback)
        entries.append(entry)
    for group in app.registered_groups:
        sub = group.typer_instance
        help_ = group.help if isinstance(group.help, str) else sub.info.help if sub else None
        help_ = help_ if isinstance(help_, str) else None  # typer's placeholder: none given
        entries.append(CommandInfo(name=group.name, callback=listed, help=help_))
    return entries
