"""The Python API: everything the CLI does, callable from a script.

    from broadcaster import announce, update, resolve, retry
    outcome = announce("Payments delayed", "Card payments are failing.", impact="major",
                       settings="settings.toml")
    print(outcome.statement_url, outcome.exit_code)

Each call runs the one-way flow: validate the request → render and preflight every channel
(nothing is written if anything is wrong) → record the update and its deliveries in the
ledger → publish the statement → fan out → return an `Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broadcaster import characters
from broadcaster.channels.base import Channel, Post
from broadcaster.dispatch import Dispatcher, Job, RetryPolicy
from broadcaster.errors import BroadcasterError, InputError
from broadcaster.ledger import Ledger, NewDelivery
from broadcaster.model import Delivery, Impact, Incident, Kind, Status, Text, Update, new_incident_id
from broadcaster.next_update import parse_next_update
from broadcaster.preflight import Audience, Preview, check, open_channel, open_channels
from broadcaster.render import page_factory
from broadcaster.report import DeliveryOutcome, IncidentReport, Outcome
from broadcaster.settings import Settings, load_settings
from broadcaster.site import SiteState
from broadcaster.sqlite_ledger import SQLiteLedger
from broadcaster.vocabulary import UpdateStatus

if TYPE_CHECKING:
    from broadcaster.report import BuildReport
    from broadcaster.subscribers import ImportReport, Subscriber, SubscriberList
    from broadcaster.tick import TickReport

SettingsLike = Settings | str | Path | None
Confirm = Callable[[Preview], bool]
#: Per-locale words: {"es": {"title": …, "message": …}}; the default locale's fill gaps in the
#: arguments (as a --message-file does).
Translations = Mapping[str, Mapping[str, str]]
NextUpdate = datetime | timedelta | str | None


class Cancelled(BroadcasterError):
    """The person at the terminal declined; nothing was recorded or sent."""


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
    s = _settings(settings)
    return _open(s, Kind.ANNOUNCE, Status.INVESTIGATING, _impact(impact),
                 {"title": title, "message": message, "guidance": guidance}, components, regions,
                 translations, channels, dry_run, draft, confirm, next_update=next_update)


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
    s = _settings(settings)
    window = _window(starts, ends, s)
    return _open(s, Kind.MAINTENANCE, Status.SCHEDULED, Impact.MINOR,
                 {"title": title, "message": message, "guidance": guidance}, components, regions,
                 translations, channels,
                 dry_run, draft, confirm, window=window)


def _open(
    s: Settings, kind: Kind, status: Status, impact: Impact, words: dict[str, str],
    components: Sequence[str], regions: Sequence[str], translations: Translations | None,
    channels: Sequence[str] | None, dry_run: bool, draft: bool, confirm: Confirm | None,
    *, next_update: NextUpdate = None, window: tuple[datetime, datetime] | None = None,
) -> Outcome:
    """A new incident (or maintenance) with its first update, through the one pipeline."""
    incident_id = new_incident_id()

    def build(previous: Incident | None, now: datetime) -> Update:
        return Update(
            id=f"{incident_id}-1", incident_id=incident_id, seq=1, kind=kind, status=status,
            impact=impact, components=s.known_names(components, "component"),
            regions=s.known_names(regions, "region"), texts=_texts(s, words, translations, None),
            created_at=now, next_update_at=parse_next_update(next_update, now, s.organization.zone),
            draft=draft, starts_at=window[0] if window else None, ends_at=window[1] if window else None,
        )

    return _run(s, incident_id, build, new=True, channels=channels, dry_run=dry_run,
                draft=draft, confirm=confirm)


def advance_maintenance(incident_id: str, status: Status, *, settings: SettingsLike = None) -> Outcome:
    """Move a maintenance to in_progress or completed (what `tick` does when it is due)."""
    return _maintenance_step(_settings(settings), incident_id, status)


def cancel_maintenance(
    incident_id: str, *, message: str = "", translations: Translations | None = None,
    channels: Sequence[str] | None = None, dry_run: bool = False, confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Call off a planned maintenance that has not finished: every channel is told it will not
    happen (or stops), the site and the JSON stop listing it."""
    return _maintenance_step(_settings(settings), incident_id, Status.CANCELLED, message=message,
                             translations=translations, channels=channels, dry_run=dry_run,
                             confirm=confirm)


def reschedule_maintenance(
    incident_id: str, *, starts: datetime | str, ends: datetime | str, message: str = "",
    translations: Translations | None = None, channels: Sequence[str] | None = None,
    dry_run: bool = False, confirm: Confirm | None = None, settings: SettingsLike = None,
) -> Outcome:
    """Move a planned maintenance to a new window, announced on every channel. A window already
    running keeps running (only its end can move)."""
    s = _settings(settings)
    window = _window(starts, ends, s)
    return _maintenance_step(s, incident_id, None, window=window, message=message,
                             translations=translations, channels=channels, dry_run=dry_run,
                             confirm=confirm)


#: Which maintenance statuses each step may start from.
_MAINTENANCE_STEPS = {
    Status.IN_PROGRESS: {Status.SCHEDULED},
    Status.COMPLETED: {Status.SCHEDULED, Status.IN_PROGRESS},
    Status.CANCELLED: {Status.SCHEDULED, Status.IN_PROGRESS},
    None: {Status.SCHEDULED, Status.IN_PROGRESS},  # a reschedule
}


def _maintenance_step(
    s: Settings, incident_id: str, status: Status | None, *, window: tuple[datetime, datetime] | None = None,
    message: str = "", translations: Translations | None = None, channels: Sequence[str] | None = None,
    dry_run: bool = False, confirm: Confirm | None = None,
) -> Outcome:
    """One step of a maintenance's life, in words from the strings unless a message is given."""
    _checked_id(incident_id)
    step = status.value if status else "rescheduled"

    def build(previous: Incident | None, now: datetime) -> Update:
        assert previous is not None
        if not previous.is_maintenance or previous.status not in _MAINTENANCE_STEPS[status]:
            raise InputError(f"{incident_id}: a maintenance that is {previous.status.value} "
                             f"cannot be {'moved to ' + status.value if status else 'rescheduled'}")
        last = previous.updates[-1]
        new_status = status or last.status
        starts, ends = window or (last.starts_at, last.ends_at)
        if status is None and last.status is Status.IN_PROGRESS and starts != last.starts_at:
            raise InputError(f"{incident_id}: the window has started; only --ends can move")
        from broadcaster.render import Templates

        templates = Templates(s)  # the words of "started", "complete", "cancelled", "moved"
        # What to do during the window still holds until it is over or called off.
        keeps = new_status in (Status.SCHEDULED, Status.IN_PROGRESS)
        words = {loc: (w.get("message") or "").strip() for loc, w in (translations or {}).items()}
        words[s.organization.default_locale] = message.strip()
        for loc, text in words.items():
            characters.check(text, "--message" + ("" if loc == s.organization.default_locale else f"-{loc}"))
        texts = {loc: Text(previous.title(loc), words.get(loc) or templates.strings(loc)["maintenance"][step],
                           guidance=last.texts[loc].guidance if keeps and loc in last.texts else "")
                 for loc in s.organization.locales}
        return replace(last, id=f"{incident_id}-{last.seq + 1}", seq=last.seq + 1, status=new_status,
                       texts=texts, created_at=now, next_update_at=None, draft=False,
                       starts_at=starts, ends_at=ends)

    return _run(s, incident_id, build, new=False, channels=channels, dry_run=dry_run, draft=False,
                confirm=confirm)


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
    s = _settings(settings)
    new_status = _status(status)
    if new_status is Status.RESOLVED:
        raise InputError("--status resolved: use `broadcaster resolve` to close an incident")
    if new_status.value not in {s.value for s in UpdateStatus}:
        raise InputError(f"--status {new_status.value}: not one of investigating, identified, monitoring")
    if clear_guidance and _given("guidance", guidance, translations):
        raise InputError("--clear-guidance and --guidance: give one or the other")
    words = {"title": title or "", "message": message, "guidance": guidance}
    return _follow_up(s, incident_id, Kind.UPDATE, new_status, words, impact, components,
                      regions, next_update, translations, channels, dry_run, draft, confirm,
                      clear_guidance=clear_guidance)


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
    s = _settings(settings)
    if no_apology and _given("apology", apology, translations):
        raise InputError("--no-apology and --apology: give one or the other")
    words = {"title": title or "", "message": message, "apology": apology, "guidance": guidance}
    return _follow_up(s, incident_id, Kind.RESOLVE, Status.RESOLVED, words, None, None, None,
                      None, translations, channels, dry_run, draft, confirm, no_apology=no_apology)


def publish(
    incident_id: str,
    *,
    channels: Sequence[str] | None = None,
    confirm: Confirm | None = None,
    settings: SettingsLike = None,
) -> Outcome:
    """Approve an incident's drafts: they go out through the normal pipeline, in order."""
    s = _settings(settings)
    _drafts_of(s, None, incident_id, "publish")
    ledger = _open_ledger(s)
    try:
        with ledger.incident_lock(incident_id):
            incident = _drafts_of(s, ledger, incident_id, "publish")
            drafts = incident.drafts
            now = datetime.now(UTC)
            live = Incident(incident.id, incident.created_at, tuple(
                replace(u, draft=False, created_at=now) if u.draft else u for u in incident.updates
            ))
            chans = open_channels(s, channels)
            pages = page_factory(s, lambda: _site_state(ledger, s, live))
            audience = _audience(ledger, s, chans, live)
            previews = [check(s, chans, pages, u, live, audience=audience) for u in live.updates
                        if u.id in {d.id for d in drafts}]
            for preview in previews:
                if confirm is not None and not confirm(preview):
                    raise Cancelled("cancelled; nothing was published")
            published = ledger.publish(incident_id, _new_deliveries(previews[0]))
            jobs = [
                job for u, p in zip(published, previews, strict=True)
                for job in _jobs(s, ledger, p, chans, u)
            ]
            _dispatcher(s, ledger).run(jobs)
            outcome = _outcome(s, ledger, incident_id, published[-1].id,
                               [d for u in published for d in ledger.deliveries(update_id=u.id)],
                               [w for p in previews for w in p.warnings])
            labels = [(u.id, f"#{u.seq} {u.kind.value} · {u.status.value}") for u in published]
            return replace(outcome, published=labels)
    finally:
        ledger.close()


def discard(incident_id: str, *, settings: SettingsLike = None) -> Outcome:
    """Drop an incident's unpublished drafts (a false alarm): kept in the ledger for the record,
    gone from lists, the site and the JSON. Nothing is sent."""
    s = _settings(settings)
    _drafts_of(s, None, incident_id, "discard")
    ledger = _open_ledger(s)
    try:
        with ledger.incident_lock(incident_id):
            _drafts_of(s, ledger, incident_id, "discard")
            gone = ledger.discard_drafts(incident_id)
        return Outcome(incident_id, gone[-1], s.statement_url(incident_id), discarded=tuple(gone))
    finally:
        ledger.close()


def _given(field: str, value: str, translations: Translations | None) -> bool:
    """Whether `field` was given in any locale (the option or a translation of it)."""
    return bool(value) or any((t or {}).get(field) for t in (translations or {}).values())


def _drafts_of(s: Settings, ledger: Ledger | None, incident_id: str, verb: str) -> Incident:
    """The incident, which must have drafts to `verb`. Without a ledger, a read-only view is
    checked first, so a wrong id or an incident with no drafts creates no ledger at all."""
    view = ledger or SQLiteLedger.for_preview(s.state.path)
    try:
        incident = _existing(view, incident_id)
    finally:
        if ledger is None:
            view.close()
    if not incident.drafts:
        raise InputError(f"incident {incident_id} has no drafts to {verb}")
    return incident


def retry(incident_id: str | None = None, *, settings: SettingsLike = None) -> list[Outcome]:
    """Finish failed or interrupted deliveries (of one incident, or of all); never resend."""
    s = _settings(settings)
    checked = _checked_id(incident_id) if incident_id else None  # before the ledger is opened
    ledger = _open_ledger(s)
    try:
        ids = [checked] if checked else ledger.unfinished_incidents()
        return [_retry_incident(s, ledger, i) for i in ids]
    finally:
        ledger.close()


def list_incidents(
    *, open_only: bool = False, drafts: bool = False, limit: int | None = 50,
    settings: SettingsLike = None,
) -> list[IncidentReport]:
    """Incidents from the ledger, most recently updated first, drafts included and marked
    (only those with a draft waiting, with `drafts`)."""
    s = _settings(settings)
    ledger = SQLiteLedger.for_preview(s.state.path)
    try:
        found = ledger.incidents(open_only=open_only, include_drafts=True, limit=None if drafts else limit)
        found = [i for i in found if i.drafts][:limit] if drafts else found
        return [IncidentReport(i, s.statement_url(i.id), local_time=s.organization.local_time) for i in found]
    finally:
        ledger.close()


def show(incident_id: str, *, settings: SettingsLike = None) -> IncidentReport:
    """One incident with its updates and every delivery's state."""
    s = _settings(settings)
    ledger = SQLiteLedger.for_preview(s.state.path)
    try:
        incident = _existing(ledger, incident_id)
        deliveries = [DeliveryOutcome.of(d) for d in ledger.deliveries(incident_id=incident_id)]
        return IncidentReport(incident, s.statement_url(incident_id), deliveries,
                              _draft_previews(s, ledger, incident), local_time=s.organization.local_time)
    finally:
        ledger.close()


def _draft_previews(s: Settings, ledger: SQLiteLedger, incident: Incident) -> list[Preview | str]:
    """Each draft update rendered for every channel, as `publish` would send it now."""
    drafts = [u for u in incident.updates if u.draft]
    if not drafts:
        return []
    live = Incident(incident.id, incident.created_at,
                    tuple(replace(u, draft=False) for u in incident.updates))
    chans = open_channels(s)
    pages = page_factory(s, lambda: _site_state(ledger, s, live))
    audience = _audience(ledger, s, chans, live)
    previews: list[Preview | str] = []
    for update in drafts:
        try:
            previews.append(check(s, chans, pages, replace(update, draft=False), live, audience=audience))
        except InputError as exc:
            previews.append(f"{update.id}: {exc}")
    return previews


# -- subscribers ---------------------------------------------------------------------------


def import_subscribers(
    path: str | Path | None = None, *, resubscribe: bool = False, settings: SettingsLike = None,
) -> ImportReport:
    """Add or update subscribers from a CSV (default: `[channels.email] subscribers`).

    Bad rows are reported with their line numbers and the good rows are kept. Addresses that
    unsubscribed stay unsubscribed unless `resubscribe`.
    """
    from broadcaster.subscribers import SubscriberStore, parse_csv

    s = _settings(settings)
    source = Path(path) if path is not None else _email_settings(s).subscribers
    rows, problems = parse_csv(source, s)
    ledger = _open_ledger(s)
    try:
        report = SubscriberStore(ledger).save([sub for _, sub in rows], resubscribe=resubscribe)
    finally:
        ledger.close()
    report.problems = problems
    return report


def add_subscriber(
    email: str, *, locale: str = "", components: Sequence[str] = (), regions: Sequence[str] = (),
    postcodes: Sequence[str] = (), settings: SettingsLike = None,
) -> ImportReport:
    """Add (or sign up again, or change) one subscriber."""
    from broadcaster.subscribers import SubscriberStore, keeps_case, make_subscriber

    s = _settings(settings)
    subscriber = make_subscriber(email, locale, s.known_names(components, "component"),
                                 s.known_names(regions, "region"), s.organization.locales, postcodes,
                                 keep_case=keeps_case(s))
    ledger = _open_ledger(s)
    try:
        return SubscriberStore(ledger).save([subscriber], resubscribe=True)
    finally:
        ledger.close()


def remove_subscriber(email: str, *, settings: SettingsLike = None) -> Subscriber:
    """Unsubscribe one address; it stays on file so a later import does not add it back."""
    from broadcaster.subscribers import SubscriberStore, keeps_case, normalize_address

    s = _settings(settings)
    address = normalize_address(email, keep_case=keeps_case(s))
    ledger = _open_ledger(s)
    try:
        removed = SubscriberStore(ledger).deactivate(email=address)
    finally:
        ledger.close()
    if removed is None:
        raise InputError(f"{address} is not an active subscriber (see `broadcaster subscribers list`)")
    return removed


def list_subscribers(*, settings: SettingsLike = None) -> SubscriberList:
    """Every subscriber on file, active or not (never their tokens)."""
    from broadcaster.subscribers import SubscriberList, SubscriberStore

    s = _settings(settings)
    ledger = SQLiteLedger.for_preview(s.state.path)
    try:
        return SubscriberList(SubscriberStore(ledger).all())
    finally:
        ledger.close()


def build_site(*, settings: SettingsLike = None) -> BuildReport:
    """Rewrite the whole status site from the ledger: every statement, every month, every feed.

    Updates rewrite only what they touch; this is for a new output_dir, changed templates or
    settings, or a site that was lost. Unchanged files are not rewritten.
    """
    from broadcaster.channels.base import Post
    from broadcaster.channels.website import site_files
    from broadcaster.errors import DeliveryError
    from broadcaster.render import Page, Templates
    from broadcaster.report import BuildReport
    from broadcaster.site import site_state

    s = _settings(settings)
    ledger = SQLiteLedger.for_preview(s.state.path)
    try:
        incidents = ledger.incidents()
        if not incidents:
            return BuildReport(0, 0, "no published incidents yet: the site is written with the first one")
        templates = Templates(s)
        state = site_state(ledger, s)
        default = s.organization.default_locale

        def page(incident: Incident, site: SiteState) -> Page:
            return Page("website", "html", incident.latest, incident, default, templates, site)

        files = site_files(page(incidents[0], state), statement=False, month=False, shared=True)
        for incident in incidents:
            files.update(site_files(page(incident, state), statement=True, month=False, shared=False))
        for key, _ in state.months:
            of_month = ledger.incidents_of_month(key)
            month_state = replace(state, month=(key, of_month))
            month_page = page(of_month[0], month_state)
            files.update(site_files(month_page, statement=False, month=True, shared=False))
    finally:
        ledger.close()
    website = open_channel(s, "website")
    try:
        receipt = website.send(Post(text="", files=files), (), resumed=False)
    except DeliveryError as exc:
        return BuildReport(0, len(files), str(exc), failed=True)
    return BuildReport(len(receipt.meta["written"]), len(files))


def tick(*, now: datetime | None = None, settings: SettingsLike = None) -> TickReport:
    """What falls due with time: reminders to staff of overdue promised updates (cron-safe)."""
    from broadcaster.tick import tick as run_tick

    s = _settings(settings)
    ledger = _open_ledger(s)
    try:
        return run_tick(s, ledger, now)
    finally:
        ledger.close()


def _email_settings(s: Settings) -> Any:
    if "email" not in s.channels:
        raise InputError("no [channels.email] section: give the CSV file to import")
    return s.channels["email"]


# -- the flow shared by announce, update and resolve --------------------------------------


def _follow_up(
    s: Settings, incident_id: str, kind: Kind, status: Status, words: dict[str, str],
    impact: Impact | str | None, components: Sequence[str] | None,
    regions: Sequence[str] | None, next_update: NextUpdate, translations: Translations | None,
    channels: Sequence[str] | None, dry_run: bool, draft: bool, confirm: Confirm | None,
    *, clear_guidance: bool = False, no_apology: bool = False,
) -> Outcome:
    _checked_id(incident_id)

    def build(previous: Incident | None, now: datetime) -> Update:
        assert previous is not None
        last = previous.updates[-1]
        as_draft = draft or previous.is_draft
        # A draft on top of a draft of the same kind revises it: a reviewed draft is one update.
        revising = as_draft and last.draft and (
            (kind is Kind.UPDATE and last.kind in (Kind.ANNOUNCE, Kind.UPDATE)) or kind is last.kind
        )
        before = Incident(previous.id, previous.created_at, previous.updates[:-1]) if revising else previous
        if before.updates and not before.is_open:
            raise InputError(
                f"incident {incident_id} is resolved; announce a new incident instead"
            )
        if last.draft and not as_draft:
            raise InputError(
                f"incident {incident_id} has a draft waiting (update {last.seq}, {last.kind.value}): "
                f"publish it (`broadcaster publish {incident_id}`), revise it with --draft, or "
                f"discard it (`broadcaster discard {incident_id}`) first"
            )
        seq = last.seq if revising else last.seq + 1
        carry = kind is not Kind.RESOLVE and not clear_guidance
        return Update(
            id=f"{incident_id}-{seq}", incident_id=incident_id, seq=seq,
            kind=last.kind if revising else kind,
            status=status,
            impact=_impact(impact) if impact is not None else last.impact,
            components=s.known_names(components, "component") if components else last.components,
            regions=s.known_names(regions, "region") if regions else last.regions,
            texts=_texts(s, words, translations, last, carry_guidance=carry),
            created_at=now,
            next_update_at=parse_next_update(next_update, now, s.organization.zone),
            draft=as_draft,
            starts_at=last.starts_at, ends_at=last.ends_at,
            apology_waived=no_apology,
        )

    return _run(s, incident_id, build, new=False, channels=channels, dry_run=dry_run,
                draft=draft, confirm=confirm)


def _run(
    s: Settings,
    incident_id: str,
    build: Callable[[Incident | None, datetime], Update],
    *,
    new: bool,
    channels: Sequence[str] | None,
    dry_run: bool,
    draft: bool,
    confirm: Confirm | None,
) -> Outcome:
    chans = open_channels(s, channels)

    def prepare(ledger: Ledger) -> Preview:
        previous = None if new else _existing(ledger, incident_id)
        upd = build(previous, datetime.now(UTC))
        before = tuple(u for u in (previous.updates if previous else ()) if u.seq != upd.seq)
        incident = Incident(incident_id, previous.created_at if previous else upd.created_at, (*before, upd))
        pages = page_factory(s, lambda: _site_state(ledger, s, incident))
        return check(s, chans, pages, upd, incident, audience=_audience(ledger, s, chans, incident),
                     drafting=upd.draft)

    # First against a read-only view, so that bad input writes nothing at all, not even a ledger.
    view = SQLiteLedger.for_preview(s.state.path)
    try:
        preview = prepare(view)
    finally:
        view.close()
    if dry_run:
        return Outcome(incident_id, preview.update.id, preview.statement_url, dry_run=True,
                       preview=preview, warnings=preview.warnings)
    if confirm is not None and not preview.update.draft and not confirm(preview):
        raise Cancelled("cancelled; nothing was recorded or sent")
    ledger = _open_ledger(s)
    try:
        with ledger.incident_lock(incident_id):
            # Again under the lock: another operator may have added an update meanwhile, and
            # this update must follow theirs.
            preview = prepare(ledger)
            upd = preview.update
            if upd.draft:
                revised = not new and upd.seq == _existing(ledger, incident_id).updates[-1].seq
                if revised:
                    ledger.revise_draft(upd)
                else:
                    ledger.record(upd, [])
                return Outcome(incident_id, upd.id, preview.statement_url, draft=True,
                               preview=preview, warnings=preview.warnings, revised=revised)
            ledger.record(upd, _new_deliveries(preview))
            _dispatcher(s, ledger).run(_jobs(s, ledger, preview, chans, upd))
            return _outcome(s, ledger, incident_id, upd.id,
                            ledger.deliveries(update_id=upd.id), preview.warnings)
    finally:
        ledger.close()


def _retry_incident(s: Settings, ledger: Ledger, incident_id: str) -> Outcome:
    with ledger.incident_lock(incident_id):
        incident = _existing(ledger, incident_id)
        unfinished = ledger.deliveries(incident_id=incident_id, unfinished=True)
        latest = incident.updates[-1]
        if not unfinished:
            return _outcome(s, ledger, incident_id, latest.id,
                            ledger.deliveries(update_id=latest.id), [])
        enabled = set(s.enabled_channels())
        gone = sorted({d.channel for d in unfinished} - enabled)
        if gone:
            raise InputError(
                f"incident {incident_id} has unfinished deliveries for {', '.join(gone)}, "
                "which is not enabled any more; enable it again to finish them"
            )
        chans = open_channels(s)
        pages = page_factory(s, lambda: _site_state(ledger, s, incident))
        by_update = {u.id: u for u in incident.updates}
        jobs: list[Job] = []
        for update_id in dict.fromkeys(d.update_id for d in unfinished):
            upd = by_update[update_id]
            mine = [d for d in unfinished if d.update_id == update_id]
            # One render per (channel, locale), however many recipients are unfinished.
            targets = list(dict.fromkeys((d.channel, d.locale) for d in mine))
            preview = check(s, chans, pages, upd, incident, targets=targets)
            jobs += _jobs(s, ledger, preview, chans, upd, mine)
        _dispatcher(s, ledger).run(jobs)
        ids = {d.id for d in unfinished}
        after = [d for d in ledger.deliveries(incident_id=incident_id) if d.id in ids]
        return _outcome(s, ledger, incident_id, latest.id, after, [])


def _jobs(s: Settings, ledger: Ledger, preview: Preview, chans: Mapping[str, Channel], upd: Update,
          deliveries: Sequence[Delivery] | None = None) -> list[Job]:
    """The recorded deliveries of `upd` (or these) with their posts; the statement channel's is
    rendered again when it is sent, from the ledger as it is then (see `Job.render`)."""
    posts = {(p.channel, p.locale): p.post for p in preview.planned}
    return [
        Job(d, chans[d.channel], posts[d.channel, d.locale], upd.seq,
            render=_statement_render(s, ledger, chans[d.channel], upd, d.locale)
            if chans[d.channel].spec.publishes_statement else None)
        for d in (deliveries if deliveries is not None else ledger.deliveries(update_id=upd.id))
    ]


def _statement_render(
    s: Settings, ledger: Ledger, channel: Channel, upd: Update, locale: str,
) -> Callable[[], Post]:
    """The statement's files rendered from the ledger at the moment they are written (under the
    site lock), with the statements of any new incident the shared pages now list, so the index
    never links to a page not written yet."""

    def render() -> Post:
        from broadcaster.channels.website import site_files

        incident = ledger.incident(upd.incident_id)
        update = next(u for u in incident.updates if u.id == upd.id)
        pages = page_factory(s, lambda: _site_state(ledger, s, incident))
        page = pages(channel.spec.name, channel.spec.template_extension, update, incident, locale)
        post = channel.compose(page)
        root = s.site.output_dir
        missing = [i for i in (*page.site.open, *page.site.maintenance)
                   if i.id != incident.id and not (root / "incidents" / i.id / "index.html").exists()]
        files = dict(post.files)
        for other in missing:
            other_page = pages(channel.spec.name, channel.spec.template_extension, other.latest, other,
                               locale)
            files.update(site_files(other_page, statement=True, month=False, shared=False))
        return replace(post, files=files)

    return render


def _new_deliveries(preview: Preview) -> list[NewDelivery]:
    return [NewDelivery(p.channel, p.locale, recipient)
            for p in preview.planned for recipient in (p.recipients or ("",))]


def _audience(ledger: SQLiteLedger, s: Settings, chans: Mapping[str, Channel],
              incident: Incident) -> Audience | None:
    """Per locale, the active subscribers this incident concerns (if a channel has an audience)."""
    if not any(c.spec.audience for c in chans.values()):
        return None
    from broadcaster.places import Places
    from broadcaster.subscribers import SubscriberStore

    components = list(dict.fromkeys(n for u in incident.updates for n in u.components))
    regions = list(dict.fromkeys(n for u in incident.updates for n in u.regions))
    places = Places.of(s.regions)
    locales = s.organization.locales
    audience: dict[str, list[str]] = {loc: [] for loc in locales}
    for subscriber in SubscriberStore(ledger).active():
        if subscriber.follows(components, regions, places):
            locale = subscriber.locale if subscriber.locale in locales else locales[0]
            audience[locale].append(subscriber.email)
    return audience


def _outcome(
    s: Settings, ledger: Ledger, incident_id: str, update_id: str, deliveries: Sequence,
    warnings: Sequence[str],
) -> Outcome:
    return Outcome(
        incident_id, update_id, s.statement_url(incident_id),
        [DeliveryOutcome.of(d) for d in deliveries], warnings=list(warnings),
    )


def _dispatcher(s: Settings, ledger: SQLiteLedger) -> Dispatcher:
    from broadcaster.progress import reporter
    from broadcaster.subscribers import SubscriberStore

    def tokens(addresses: Sequence[str]) -> dict[str, str]:
        active = SubscriberStore(ledger).active_tokens()
        return {a: active[a] for a in addresses if a in active}

    return Dispatcher(ledger, RetryPolicy.from_settings(s.retry), s.masked,
                      tokens=tokens, progress=reporter.get())


def _site_state(ledger: Ledger, s: Settings, incident: Incident) -> SiteState:
    """The site's lists as they will be once `incident` is recorded."""
    from broadcaster.site import site_state

    return site_state(ledger, s, incident)


# -- input checks --------------------------------------------------------------------------


def _settings(settings: SettingsLike) -> Settings:
    return settings if isinstance(settings, Settings) else load_settings(settings)


def _open_ledger(s: Settings) -> SQLiteLedger:
    import sys

    return SQLiteLedger(s.state.path, on_wait=lambda msg: print(msg, file=sys.stderr))


def _window(starts: datetime | str, ends: datetime | str, s: Settings) -> tuple[datetime, datetime]:
    """A maintenance window: ISO times, the end after the start and still to come."""
    if not starts or not ends:
        raise InputError("--starts and --ends are required (ISO, e.g. 2026-12-01T02:00)")
    window = (_moment(starts, "--starts", s), _moment(ends, "--ends", s))
    if window[1] <= window[0]:
        raise InputError("--ends must be after --starts")
    if window[1] <= datetime.now(UTC):
        raise InputError("--ends is in the past: a maintenance is announced before it ends")
    return window


def _moment(value: datetime | str, option: str, s: Settings) -> datetime:
    """An ISO date and time; without an offset it is in the organisation's time zone."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InputError(f"{option} {value!r}: not an ISO date and time such as "
                             "2026-12-01T02:00") from None
    return value if value.tzinfo else value.replace(tzinfo=s.organization.zone)


def _checked_id(incident_id: str) -> str:
    from broadcaster.model import is_incident_id

    if not is_incident_id(incident_id):
        raise InputError(f"{incident_id!r} is not an incident id (see `broadcaster list`)")
    return incident_id


def _existing(ledger: Ledger, incident_id: str) -> Incident:
    return ledger.incident(_checked_id(incident_id))


def _impact(value: Impact | str) -> Impact:
    try:
        return Impact(value)
    except ValueError:
        raise InputError(
            f"--impact {value!r}: not one of {', '.join(i.value for i in Impact)}"
        ) from None


def _status(value: Status | str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise InputError(
            f"--status {value!r}: not one of {', '.join(s.value for s in Status)}"
        ) from None


def _texts(
    s: Settings, words: Mapping[str, str], translations: Translations | None,
    previous: Update | None, *, carry_guidance: bool = False,
) -> dict[str, Text]:
    """The update's words per locale; the default locale's are required, others optional.

    What a locale leaves out stays empty here (readers get the default locale's words, and
    `message_rules` warns the sender). The title carries over from `previous`; with
    `carry_guidance` so does the guidance, unless any locale gives new guidance, in which case
    every locale must (old guidance beside new would contradict it).
    """
    locales = s.organization.locales
    default = locales[0]
    # Explicit options win over a message file's table for the same locale.
    given: dict[str, Mapping[str, str]] = dict(translations or {})
    given[default] = {**given.get(default, {}), **{k: v for k, v in words.items() if v}}
    given = {default: given.pop(default), **given}
    carry = carry_guidance and previous is not None and not any(f.get("guidance") for f in given.values())
    texts: dict[str, Text] = {}
    for locale, fields in given.items():
        where = "" if locale == default else f" ({locale})"
        if locale not in locales:
            raise InputError(
                f"text for locale {locale!r}, which is not one of [organization] locales {locales}"
            )
        unknown = set(fields) - {"title", "message", "guidance", "apology"}
        if unknown:
            raise InputError(f"unknown text field{where}: {', '.join(sorted(unknown))}")
        for name, value in fields.items():
            characters.check(value, f"--{name}" + (f"-{locale}" if locale != default else ""))
        before = previous.texts.get(locale) if previous is not None else None
        guidance = (fields.get("guidance") or "").strip()
        if not guidance and carry and before is not None:
            guidance = before.guidance
        message = (fields.get("message") or "").strip()
        if not message:
            if locale != default and not any(fields.values()):
                continue  # nothing in this locale this time: its readers get the default's words
            raise InputError(f"message{where}: required and cannot be empty")
        title = (fields.get("title") or "").strip() or (before.title if before is not None else "")
        if not title and locale == default:
            raise InputError("title: required and cannot be empty")
        texts[locale] = Text(title=title, message=message, guidance=guidance,
                             apology=(fields.get("apology") or "").strip())
    return texts
