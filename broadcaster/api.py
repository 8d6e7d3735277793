"""The Python API: everything the CLI does, callable from a script.

    from broadcaster import announce, update, resolve, retry
    outcome = announce("Payments delayed", "Card payments are failing.", impact="major",
                       settings="settings.toml")
    print(outcome.statement_url, outcome.exit_code)

Each function here only turns its arguments into a validated request (request.py) and hands
it to the send pipeline (pipeline.py): render and preflight every channel (nothing is written
if anything is wrong) → record the update and its deliveries in the ledger → publish the
statement → fan out → return an `Outcome`. Subscribers are subscribers.py; the status site's
rebuild is site/build.py; tick is tick.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from broadcaster import defaults
from broadcaster.ledger import Streamed, open_ledger
from broadcaster.model import Impact, Kind, Status, checked_id
from broadcaster.report import (
    DeliveryOutcome,
    IncidentReport,
    RecipientListing,
    mailing_lists,
    mailing_summaries,
)

if TYPE_CHECKING:
    from broadcaster.ledger.export import StateReport, TransferReport
    from broadcaster.model import Subscriber
    from broadcaster.outcome import Outcome
    from broadcaster.pipeline import Cancelled, Confirm
    from broadcaster.request import NextUpdate, Translations
    from broadcaster.settings import Settings
    from broadcaster.settings_file import Reading
    from broadcaster.site.build import BuildReport
    from broadcaster.subscribers import ImportReport, Roster
    from broadcaster.subscriptions import Erased, PersonData
    from broadcaster.tick import TickReport
    from broadcaster.worker import WorkerReport

__all__ = [
    "Cancelled",
    "Confirm",
    "NextUpdate",
    "SettingsLike",
    "Translations",
    "add_subscriber",
    "advance_maintenance",
    "announce",
    "build_site",
    "cancel_maintenance",
    "discard",
    "erase_subscriber",
    "export_state",
    "export_subscriber",
    "import_state",
    "import_subscribers",
    "list_incidents",
    "list_subscribers",
    "migrate_state",
    "postmortem",
    "publish",
    "remove_subscriber",
    "reschedule_maintenance",
    "resolve",
    "retry",
    "schedule_maintenance",
    "show",
    "tick",
    "update",
    "worker",
]

if TYPE_CHECKING:
    #: Settings validated already, or the file to read them from (None: --config's default).
    SettingsLike: TypeAlias = Settings | str | Path | None


def __getattr__(name: str) -> object:
    """`Cancelled` and `Confirm` come from the pipeline, imported only when a command sends:
    `list` and `show` start without it (it brings Jinja2, Markdown, tenacity, the channels);
    `NextUpdate` and `Translations` from request.py, which only sending needs.
    `SettingsLike` names the validated settings, which bring pydantic."""
    if name == "SettingsLike":  # the type itself, for code that inspects annotations
        from broadcaster.settings import Settings

        return Settings | str | Path | None
    if name in ("Cancelled", "Confirm"):
        from broadcaster import pipeline

        return getattr(pipeline, name)
    if name in ("NextUpdate", "Translations"):
        from broadcaster import request

        return getattr(request, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def announce(
    title: str,
    message: str,
    *,
    impact: Impact | str = Impact.MINOR,
    components: Sequence[str] = (),
    regions: Sequence[str] = (),
    guidance: str = "",
    next_update: NextUpdate = None,
    translations: Translations | None = None,
    channels: Sequence[str] | None = None,
    dry_run: bool = False,
    draft: bool = False,
    confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Announce a new incident: statement first, then every enabled channel."""
    from broadcaster import pipeline, request

    s = _settings(settings)
    req = request.new_incident(
        s, kind=Kind.ANNOUNCE, status=Status.INVESTIGATING, impact=impact,
        words={"title": title, "message": message, "guidance": guidance}, components=components,
        regions=regions, translations=translations, channels=channels, draft=draft,
        next_update=next_update)
    return pipeline.send(s, req, dry_run=dry_run, confirm=confirm)


def schedule_maintenance(
    title: str,
    message: str,
    *,
    starts: datetime | str,
    ends: datetime | str,
    components: Sequence[str] = (),
    regions: Sequence[str] = (),
    guidance: str = "",
    translations: Translations | None = None,
    channels: Sequence[str] | None = None,
    dry_run: bool = False,
    draft: bool = False,
    confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Announce a planned maintenance window through every channel; `tick` moves it along."""
    from broadcaster import pipeline, request

    s = _settings(settings)
    window = request.window_of(starts, ends, s)
    req = request.new_incident(
        s, kind=Kind.MAINTENANCE, status=Status.SCHEDULED, impact=Impact.MINOR,
        words={"title": title, "message": message, "guidance": guidance}, components=components,
        regions=regions, translations=translations, channels=channels, draft=draft, window=window)
    return pipeline.send(s, req, dry_run=dry_run, confirm=confirm)


def advance_maintenance(incident_id: str, status: Status, *, settings: SettingsLike = None) -> Outcome:
    """Move a maintenance to in_progress or completed (what `tick` does when it is due)."""
    from broadcaster import pipeline, request

    s = _settings(settings)
    return pipeline.send(s, request.maintenance_step(s, incident_id, status))


def cancel_maintenance(
    incident_id: str, *, message: str = "", translations: Translations | None = None,
    channels: Sequence[str] | None = None, dry_run: bool = False, confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Call off a planned maintenance that has not finished: every channel is told it will not
    happen (or stops), the site and the JSON stop listing it."""
    from broadcaster import pipeline, request

    s = _settings(settings)
    req = request.maintenance_step(s, incident_id, Status.CANCELLED, message=message,
                                   translations=translations, channels=channels)
    return pipeline.send(s, req, dry_run=dry_run, confirm=confirm)


def reschedule_maintenance(
    incident_id: str, *, starts: datetime | str, ends: datetime | str, message: str = "",
    translations: Translations | None = None, channels: Sequence[str] | None = None,
    dry_run: bool = False, confirm: Confirm | None = None, settings: SettingsLike = None,
) -> Outcome:
    """Move a planned maintenance to a new window, announced on every channel. A window already
    running keeps running (only its end can move)."""
    from broadcaster import pipeline, request

    s = _settings(settings)
    req = request.maintenance_step(s, incident_id, None, window=request.window_of(starts, ends, s),
                                   message=message, translations=translations, channels=channels)
    return pipeline.send(s, req, dry_run=dry_run, confirm=confirm)


def update(
    incident_id: str,
    message: str,
    *,
    status: Status | str,
    title: str | None = None,
    impact: Impact | str | None = None,
    components: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    guidance: str = "",
    clear_guidance: bool = False,
    next_update: NextUpdate = None,
    translations: Translations | None = None,
    channels: Sequence[str] | None = None,
    dry_run: bool = False,
    draft: bool = False,
    confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Post an update to an open incident; it replies in each channel's incident thread.

    The guidance carries over from the update before unless `guidance` replaces it or
    `clear_guidance` drops it. On an incident whose latest update is an unpublished draft,
    a draft update revises that draft in place.
    """
    from broadcaster import pipeline, request

    s = _settings(settings)
    new_status = request.update_status(status)
    request.one_of("--clear-guidance", "guidance", clear_guidance, guidance, translations)
    req = request.follow_up(
        s, incident_id, kind=Kind.UPDATE, status=new_status,
        words={"title": title or "", "message": message, "guidance": guidance},
        translations=translations, channels=channels, draft=draft, impact=impact,
        components=components, regions=regions, next_update=next_update, clear_guidance=clear_guidance)
    return pipeline.send(s, req, dry_run=dry_run, confirm=confirm)


def resolve(
    incident_id: str,
    message: str,
    *,
    apology: str = "",
    no_apology: bool = False,
    guidance: str = "",
    title: str | None = None,
    translations: Translations | None = None,
    channels: Sequence[str] | None = None,
    dry_run: bool = False,
    draft: bool = False,
    confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Close an incident with its explanation and apology.

    A major or critical incident is not closed without an apology unless `no_apology` says
    that is deliberate. Earlier guidance does not carry over (it was for while it was down);
    `guidance` gives any that still holds.
    """
    from broadcaster import pipeline, request

    s = _settings(settings)
    request.one_of("--no-apology", "apology", no_apology, apology, translations)
    req = request.follow_up(
        s, incident_id, kind=Kind.RESOLVE, status=Status.RESOLVED,
        words={"title": title or "", "message": message, "apology": apology, "guidance": guidance},
        translations=translations, channels=channels, draft=draft, no_apology=no_apology)
    return pipeline.send(s, req, dry_run=dry_run, confirm=confirm)


def postmortem(
    incident_id: str,
    body: str,
    *,
    translations: Mapping[str, str] | None = None,
    revise: bool = False,
    channels: Sequence[str] | None = None,
    dry_run: bool = False,
    draft: bool = False,
    confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Publish a resolved incident's postmortem (Markdown; `translations` by locale): a section
    of the statement page, and a reply in the incident's thread on every channel.

    With `draft` it waits for review (`show`, then `publish`). `revise` corrects a published
    one on the statement page only.
    """
    from broadcaster import pipeline, request

    s = _settings(settings)
    bodies = {s.organization.default_locale: body, **(translations or {})}
    req = request.postmortem(s, incident_id, bodies, draft=draft, revise=revise, channels=channels)
    return pipeline.send(s, req, dry_run=dry_run, confirm=confirm)


def publish(
    incident_id: str,
    *,
    channels: Sequence[str] | None = None,
    confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Approve an incident's drafts: they go out through the normal pipeline, in order."""
    from broadcaster import pipeline

    return pipeline.publish(_settings(settings), incident_id, channels=channels, confirm=confirm)


def discard(incident_id: str, *, settings: SettingsLike = None) -> Outcome:
    """Drop an incident's unpublished drafts (a false alarm): kept in the ledger for the record,
    gone from lists, the site and the JSON. Nothing is sent."""
    from broadcaster import pipeline

    return pipeline.discard(_settings(settings), incident_id)


def retry(incident_id: str | None = None, *, settings: SettingsLike = None) -> list[Outcome]:
    """Finish failed or interrupted deliveries (of one incident, or of all); never resend."""
    from broadcaster import pipeline

    return pipeline.retry(_settings(settings), incident_id)


def list_incidents(
    *, open_only: bool = False, drafts: bool = False, limit: int | None = defaults.LIST_LIMIT,
    settings: SettingsLike = None,
) -> list[IncidentReport]:
    """Incidents from the ledger, most recently updated first, drafts included and marked
    (only those with a draft waiting, with `drafts`)."""
    s = _reading(settings)
    with open_ledger(s, read_only=True) as ledger:
        found = ledger.incidents(open_only=open_only, include_drafts=True, limit=None if drafts else limit)
    found = [i for i in found if i.drafts][:limit] if drafts else found
    return [IncidentReport(i, s.statement_url(i.id), local_time=s.local_time) for i in found]


def show(incident_id: str, *, settings: SettingsLike = None) -> IncidentReport:
    """One incident with its updates, every delivery's state, and what its drafts would send."""
    s = _reading(settings)
    with open_ledger(s, read_only=True) as ledger:
        incident = ledger.incident(checked_id(incident_id))
        names = mailing_lists(ledger, incident_id)
        posts = ledger.deliveries(incident_id=incident_id, excluded=names)
        deliveries = [DeliveryOutcome.of(d) for d in posts]
        lists = [m for u in incident.updates for m in mailing_summaries(ledger, update_id=u.id, lists=names)]
        previews: list = []
        if incident.drafts:  # rendering what a draft would send needs the whole pipeline
            from broadcaster import pipeline

            previews = pipeline.draft_previews(_settings(settings), ledger, incident)
    return IncidentReport(incident, s.statement_url(incident_id), deliveries, lists, previews,
                          local_time=s.local_time)


def recipients(incident_id: str, *, settings: SettingsLike = None) -> RecipientListing:
    """Every recipient of the incident's mailing lists with their delivery's state, read from
    the ledger a chunk at a time as the result is gone through (a million, in flat memory)."""
    s = _reading(settings)
    checked = checked_id(incident_id)
    with open_ledger(s, read_only=True) as ledger:
        ledger.incident(checked)  # an unknown id is an error now, not halfway through the listing
        names = mailing_lists(ledger, checked)

    return RecipientListing(Streamed(s, lambda ledger: map(
        DeliveryOutcome.of, ledger.each_delivery(incident_id=checked, channels=names))))


def import_subscribers(
    path: str | Path | None = None, *, resubscribe: bool = False, settings: SettingsLike = None,
) -> ImportReport:
    """Add or update subscribers from a CSV (default: `[channels.email] subscribers`).

    Bad rows are reported with their line numbers and the good rows are kept. Addresses that
    unsubscribed stay unsubscribed unless `resubscribe`.
    """
    from broadcaster import subscribers

    return subscribers.import_csv(_settings(settings), Path(path) if path is not None else None,
                                  resubscribe=resubscribe)


def add_subscriber(
    email: str, *, locale: str = "", components: Sequence[str] = (), regions: Sequence[str] = (),
    postcodes: Sequence[str] = (), settings: SettingsLike = None,
) -> ImportReport:
    """Add (or sign up again, or change) one subscriber."""
    from broadcaster import subscribers

    return subscribers.add(_settings(settings), email, locale, components, regions, postcodes)


def remove_subscriber(email: str, *, settings: SettingsLike = None) -> Subscriber:
    """Unsubscribe one address; it stays on file so a later import does not add it back."""
    from broadcaster import subscribers

    return subscribers.remove(_settings(settings), email)


def list_subscribers(*, each: bool = True, settings: SettingsLike = None) -> Roster:
    """How many subscribers are active, waiting to confirm and unsubscribed, and (with `each`)
    every one of them (never their tokens): `Roster.subscribers` reads them from the ledger a
    chunk at a time each time it is gone through, so a million are never held at once."""
    from broadcaster import subscribers

    return subscribers.listed(_settings(settings), each=each)


def export_subscriber(email: str, *, settings: SettingsLike = None) -> PersonData:
    """Everything held about one address (a data-protection request): subscription, consent,
    unconfirmed requests, and each email sent to it."""
    from broadcaster import subscriptions

    return subscriptions.export_person(_settings(settings), email)


def erase_subscriber(email: str, *, settings: SettingsLike = None) -> Erased:
    """Erase one address: subscription, consent and requests deleted, unsent emails cancelled,
    records of sent ones kept (exactly once depends on them) under an alias naming nobody."""
    from broadcaster import subscriptions

    return subscriptions.erase_person(_settings(settings), email)


def migrate_state(*, settings: SettingsLike = None) -> StateReport:
    """Create or upgrade the ledger's schema (any command does it on first use; this does it
    now, for a deployment step). Safe from two hosts at once."""
    from broadcaster.ledger.export import StateReport

    s = _settings(settings)
    with open_ledger(s) as ledger:
        before, after = ledger.migrated or (0, 0)
    return StateReport(s.state.kind, _where(s), before, after)


def export_state(path: str | Path, *, settings: SettingsLike = None) -> TransferReport:
    """Write the whole ledger to a new file (JSON Lines): every incident, delivery, subscriber
    and token, to import into another store with `import_state`."""
    from broadcaster.ledger import export
    from broadcaster.ledger.export import TransferReport

    s = _settings(settings)
    with open_ledger(s, read_only=True) as ledger:
        counts = export.write(ledger, Path(path), s.state.kind)
    return TransferReport("exported", str(path), s.state.kind, _where(s), counts)


def import_state(path: str | Path, *, settings: SettingsLike = None) -> TransferReport:
    """Load an export into this ledger, which must be empty; all or nothing."""
    from broadcaster.errors import InputError
    from broadcaster.ledger import export
    from broadcaster.ledger.export import TransferReport

    s = _settings(settings)
    rows = export.read(Path(path))
    with open_ledger(s) as ledger:
        if not ledger.is_empty():
            raise InputError(f"the {s.state.kind} ledger at {_where(s)} already holds incidents or "
                             "subscribers; import into an empty one")
        counts = ledger.import_rows(rows)
    return TransferReport("imported", str(path), s.state.kind, _where(s), counts)


def _where(s: Settings) -> str:
    return s.state.url or str(s.state.path)


def build_site(*, full: bool = False, settings: SettingsLike = None) -> BuildReport:
    """Rewrite the whole status site from the ledger: every statement, every month, every feed.

    Updates rewrite only what they touch; this is for a new output_dir, changed templates or
    settings, or a site that was lost. Unchanged files are not rewritten, and a statement or
    month page made from unchanged inputs is not even rendered, unless `full`.
    """
    from broadcaster.site.build import build_site as build

    return build(_settings(settings), full=full)


def tick(*, now: datetime | None = None, settings: SettingsLike = None) -> TickReport:
    """What falls due with time: maintenance steps, reminders of overdue updates, expired
    drafts (safe from cron every minute, and twice at once)."""
    from broadcaster.tick import tick as run_tick

    s = _settings(settings)
    with open_ledger(s) as ledger:
        return run_tick(s, ledger, now)


def worker(*, once: bool = False, stop: threading.Event | None = None,
           say: Callable[[str], None] = lambda line: None, settings: SettingsLike = None) -> WorkerReport:
    """Send what nobody is sending (mailing-list batches, a dead sender's deliveries) until
    `stop` is set, or, with `once`, until nothing is left to take. Any number, on any host."""
    from broadcaster.worker import run

    return run(_settings(settings), once=once, stop=stop, say=say)


def _settings(settings: SettingsLike) -> Settings:
    from broadcaster.settings import Settings, load_settings

    return settings if isinstance(settings, Settings) else load_settings(settings)


def _reading(settings: SettingsLike) -> Reading:
    """What a command that only reads the ledger needs: from settings already validated, or
    the file read without validating the rest (settings_file.py: no pydantic, no channel)."""
    if settings is None or isinstance(settings, str | Path):
        from broadcaster.settings_file import reading_settings

        return reading_settings(settings)
    return settings.reading
