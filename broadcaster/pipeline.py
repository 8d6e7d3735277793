"""The send pipeline: preview, record, send; publish drafts; retry what is unfinished.

    request → preview (render + preflight, against a read-only view: bad input writes nothing)
            → under the incident's lock: preview again, record the update and its deliveries
            → the statement on the website → every other channel, concurrently → Outcome

Everything here works on a validated `Request` (request.py) and the ledger's interface; the
channels are opened by preflight, and the fan-out itself is dispatch.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime

from broadcaster.channels.base import Channel, Post
from broadcaster.dispatch import UNFINISHED, UNSENT, Dispatcher, Job, MailingList, RetryPolicy, Sharing
from broadcaster.errors import BroadcasterError, InputError
from broadcaster.ledger import DeliveryCount, Ledger, NewDelivery, SubscriberSelection, open_ledger
from broadcaster.model import Delivery, Incident, Update, checked_id
from broadcaster.outcome import Outcome
from broadcaster.preflight import Audience, Preview, check, open_channels
from broadcaster.registry import mailing_lists
from broadcaster.render import page_factory
from broadcaster.report import DeliveryOutcome, mailing_summaries
from broadcaster.request import Request
from broadcaster.settings import Settings
from broadcaster.site.state import SiteState

#: Asked once per update before anything is recorded; False cancels.
Confirm = Callable[[Preview], bool]


class Cancelled(BroadcasterError):
    """The person at the terminal declined; nothing was recorded or sent."""


def send(s: Settings, request: Request, *, dry_run: bool = False, confirm: Confirm | None = None) -> Outcome:
    """Preview the request's update, then (unless a dry run or a draft) record and send it."""
    chans = open_channels(s, request.channels)

    def prepare(ledger: Ledger) -> Preview:
        previous = None if request.new else existing(ledger, request.incident_id)
        upd = request.build(previous, datetime.now(UTC))
        before = tuple(u for u in (previous.updates if previous else ()) if u.seq != upd.seq)
        created = previous.created_at if previous else upd.created_at
        incident = Incident(request.incident_id, created, (*before, upd))
        return preview(s, ledger, chans, upd, incident, drafting=upd.draft)

    # First against a read-only view, so that bad input writes nothing at all, not even a ledger.
    with open_ledger(s, read_only=True) as view:
        first = prepare(view)
    if dry_run:
        return Outcome(request.incident_id, first.update.id, first.statement_url, dry_run=True,
                       preview=first, warnings=first.warnings)
    if confirm is not None and not first.update.draft and not confirm(first):
        raise Cancelled("cancelled; nothing was recorded or sent")
    with _writing(s) as ledger, ledger.incident_lock(request.incident_id):
        # Again under the lock: another operator may have added an update meanwhile, and
        # this update must follow theirs.
        checked = prepare(ledger)
        upd = checked.update
        if upd.draft:
            revised = not request.new and upd.seq == existing(ledger, request.incident_id).updates[-1].seq
            if revised:
                ledger.revise_draft(upd)
            else:
                ledger.record(upd, [])
            return Outcome(request.incident_id, upd.id, checked.statement_url, draft=True,
                           preview=checked, warnings=checked.warnings, revised=revised)
        listed = ledger.record(upd, new_deliveries(checked), selections(checked))
        dispatcher(s, ledger).run(*_work(s, ledger, checked, chans, upd, totals=listed))
        return _outcome(s, ledger, request.incident_id, [upd.id], [*checked.warnings, *_said(chans)])


def publish(s: Settings, incident_id: str, *, channels: Sequence[str] | None = None,
            confirm: Confirm | None = None) -> Outcome:
    """Send an incident's drafts, in order, as if each were sent now."""
    _with_drafts(s, None, incident_id, "publish")
    with _writing(s) as ledger, ledger.incident_lock(incident_id):
        incident = _with_drafts(s, ledger, incident_id, "publish")
        drafts = {d.id for d in incident.drafts}
        now = datetime.now(UTC)
        live = Incident(incident.id, incident.created_at, tuple(
            u._replace(draft=False, created_at=now) if u.draft else u for u in incident.updates
        ))
        chans = open_channels(s, channels)
        previews = [preview(s, ledger, chans, u, live) for u in live.updates if u.id in drafts]
        for each in previews:
            if confirm is not None and not confirm(each):
                raise Cancelled("cancelled; nothing was published")
        published = ledger.publish(incident_id, lambda: new_deliveries(previews[0]), selections(previews[0]))
        jobs: list[Job] = []
        lists: list[MailingList] = []
        for u, p in zip(published, previews, strict=True):
            more_jobs, more_lists = _work(s, ledger, p, chans, u)
            jobs += more_jobs
            lists += more_lists
        dispatcher(s, ledger).run(jobs, lists)
        outcome = _outcome(s, ledger, incident_id, [u.id for u in published],
                           [*(w for p in previews for w in p.warnings), *_said(chans)])
        labels = [(u.id, f"#{u.seq} {u.kind.value} · {u.status.value}") for u in published]
        return replace(outcome, published=labels)


def discard(s: Settings, incident_id: str) -> Outcome:
    """Set an incident's drafts aside (kept for the record); nothing is sent."""
    _with_drafts(s, None, incident_id, "discard")
    with _writing(s) as ledger, ledger.incident_lock(incident_id):
        _with_drafts(s, ledger, incident_id, "discard")
        gone = ledger.discard_drafts(incident_id)
    return Outcome(incident_id, gone[-1], s.statement_url(incident_id), discarded=tuple(gone))


def retry(s: Settings, incident_id: str | None = None) -> list[Outcome]:
    """Finish failed or interrupted deliveries (of one incident, or of all); never resend."""
    checked = checked_id(incident_id) if incident_id else None  # before the ledger is opened
    with _writing(s) as ledger:
        ids = [checked] if checked else ledger.unfinished_incidents()
        return [_retry_incident(s, ledger, i) for i in ids]


def draft_previews(s: Settings, ledger: Ledger, incident: Incident) -> list[Preview | str]:
    """Each draft update rendered for every channel, as `publish` would send it now."""
    drafts = [u for u in incident.updates if u.draft]
    if not drafts:
        return []
    live = Incident(incident.id, incident.created_at,
                    tuple(u._replace(draft=False) for u in incident.updates))
    chans = open_channels(s)
    previews: list[Preview | str] = []
    for update in drafts:
        try:
            previews.append(preview(s, ledger, chans, update._replace(draft=False), live))
        except InputError as exc:
            previews.append(f"{update.id}: {exc}")
    return previews


def preview(
    s: Settings, ledger: Ledger, chans: Mapping[str, Channel], update: Update, incident: Incident, *,
    drafting: bool = False, targets: Sequence[tuple[str, str]] | None = None,
) -> Preview:
    """`update` rendered and checked for every channel, with the site and the audience as they
    will be once it is recorded (PreflightError if any channel's render is wrong)."""
    pages = page_factory(s, lambda: _site_state(ledger, s, incident))
    if targets is not None:  # a retry: only these (channel, locale), to the recipients recorded
        return check(s, chans, pages, update, incident, targets=targets)
    return check(s, chans, pages, update, incident, audience=_audience(ledger, s, chans, incident),
                 drafting=drafting)


def existing(ledger: Ledger, incident_id: str) -> Incident:
    return ledger.incident(checked_id(incident_id))


def new_deliveries(preview: Preview) -> Iterator[NewDelivery]:
    """The deliveries to record for a preview: one per post and destination, and one per
    recipient of a channel with an audience who follows only some components or places,
    streamed from the ledger's subscribers (never held whole); the rest of the audience is
    `selections`."""
    for p in preview.planned:
        if not p.recipients:
            yield from (NewDelivery(p.channel, p.locale, to) for to in p.destinations)
    if preview.audience is not None:
        for channel, locales in _listed_locales(preview).items():
            for locale, address in preview.audience.each():
                if locale in locales:
                    yield NewDelivery(channel, locale, address, listed=True)


def selections(preview: Preview) -> list[SubscriberSelection]:
    """The audience the ledger records set-based, channel by channel: whoever follows
    everything (or everyone, for an incident with no components or regions)."""
    audience = preview.audience
    if audience is None:
        return []
    return [SubscriberSelection(channel, audience.locales, tuple(sorted(locales)), audience.everyone)
            for channel, locales in _listed_locales(preview).items()]


def _listed_locales(preview: Preview) -> dict[str, set[str]]:
    """Per channel with an audience, the locales its post was rendered in."""
    lists: dict[str, set[str]] = {}
    for p in preview.planned:
        if p.recipients:
            lists.setdefault(p.channel, set()).add(p.locale)
    return lists


# -- inside -----------------------------------------------------------------------------------


def _writing(s: Settings) -> AbstractContextManager[Ledger]:
    """The ledger for a command that records, telling the person when it waits for another."""
    return open_ledger(s, on_wait=lambda msg: print(msg, file=sys.stderr))


def _with_drafts(s: Settings, ledger: Ledger | None, incident_id: str, verb: str) -> Incident:
    """The incident, which must have drafts to `verb`. Without a ledger, a read-only view is
    checked first, so a wrong id or an incident with no drafts creates no ledger at all."""
    if ledger is None:
        with open_ledger(s, read_only=True) as view:
            incident = existing(view, incident_id)
    else:
        incident = existing(ledger, incident_id)
    if not incident.drafts:
        raise InputError(f"incident {incident_id} has no drafts to {verb}")
    return incident


def _retry_incident(s: Settings, ledger: Ledger, incident_id: str) -> Outcome:
    with ledger.incident_lock(incident_id):
        incident = existing(ledger, incident_id)
        posts = ledger.deliveries(incident_id=incident_id, unfinished=True, excluded=mailing_lists())
        lists = [c for c in ledger.delivery_counts(channels=mailing_lists(), incident_id=incident_id)
                 if c.state in UNFINISHED]
        updates = list(dict.fromkeys([*(d.update_id for d in posts), *(c.update_id for c in lists)]))
        if not updates:
            return _outcome(s, ledger, incident_id, [incident.updates[-1].id], [])
        gone = sorted({*(d.channel for d in posts), *(c.channel for c in lists)} - set(s.enabled_channels()))
        if gone:
            raise InputError(
                f"incident {incident_id} has unfinished deliveries for {', '.join(gone)}, "
                "which is not enabled any more; enable it again to finish them"
            )
        chans = open_channels(s)
        resume(s, ledger, incident, posts, lists, chans, dispatcher(s, ledger, retrying=True))
        return _outcome(s, ledger, incident_id, updates, _said(chans), only_ids={d.id for d in posts})


def resume(s: Settings, ledger: Ledger, incident: Incident, posts: Sequence[Delivery],
           lists: Sequence[DeliveryCount], chans: Mapping[str, Channel], fan_out: Dispatcher) -> None:
    """Send recorded deliveries again (unfinished ones, found under the incident's lock): these
    posts, and the recipients of these mailing lists still to do, each update's post rendered as
    it was recorded, once per (channel, locale)."""
    by_update = {u.id: u for u in incident.updates}
    jobs: list[Job] = []
    mailings: list[MailingList] = []
    for update_id in dict.fromkeys([*(d.update_id for d in posts), *(c.update_id for c in lists)]):
        upd = by_update[update_id]
        mine = [d for d in posts if d.update_id == update_id]
        counts = [c for c in lists if c.update_id == update_id]
        targets = {(d.channel, d.locale) for d in mine} | {(c.channel, c.locale) for c in counts}
        preview = rendered(s, ledger, chans, incident, upd, targets)
        more_jobs, more_lists = _work(s, ledger, preview, chans, upd, mine, _totals(counts))
        jobs += more_jobs
        mailings += more_lists
    fan_out.run(jobs, mailings)


def rendered(s: Settings, ledger: Ledger, chans: Mapping[str, Channel], incident: Incident, update: Update,
             targets: Iterable[tuple[str, str]]) -> Preview:
    """A recorded update rendered again for these (channel, locale), to the recipients recorded."""
    return preview(s, ledger, chans, update, incident, targets=sorted(targets))


def _work(s: Settings, ledger: Ledger, preview: Preview, chans: Mapping[str, Channel], upd: Update,
          posts: Sequence[Delivery] | None = None, totals: Mapping[str, int] | None = None,
          ) -> tuple[list[Job], list[MailingList]]:
    """The recorded deliveries of `upd` (or these) with their posts, and its mailing lists with
    how many recipients each has (as recorded, or these): their recipients are claimed from the
    ledger batch by batch as they are sent. The statement channel's post is rendered again when
    it is sent, from the ledger as it is then (see `Job.render`)."""
    rendered_posts = {(p.channel, p.locale): p.post for p in preview.planned}
    if posts is None:
        posts = ledger.deliveries(update_id=upd.id, excluded=mailing_lists())
    if totals is None:
        totals = _totals(ledger.delivery_counts(channels=mailing_lists(), update_id=upd.id))
    jobs = [
        Job(d, chans[d.channel], rendered_posts[d.channel, d.locale], upd.seq,
            render=_statement_render(s, ledger, chans[d.channel], upd, d.locale)
            if chans[d.channel].publishes_statement else None)
        for d in posts
    ]
    mailings = [
        MailingList(chans[name], upd.incident_id, upd.id, upd.seq,
                    {loc: post for (channel, loc), post in rendered_posts.items() if channel == name}, total)
        for name, total in sorted(totals.items()) if total
    ]
    return jobs, mailings


def _totals(counts: Sequence[DeliveryCount]) -> dict[str, int]:
    """How many recipients each mailing list has, from its counts by locale and state."""
    totals: dict[str, int] = {}
    for c in counts:
        totals[c.channel] = totals.get(c.channel, 0) + c.count
    return totals


def _statement_render(
    s: Settings, ledger: Ledger, channel: Channel, upd: Update, locale: str,
) -> Callable[[], Post]:
    """The statement's files rendered from the ledger at the moment they are written (under the
    site lock), with the statements of any new incident the shared pages now list, so the index
    never links to a page not written yet."""

    def render() -> Post:
        from broadcaster.site.files import site_files

        incident = ledger.incident(upd.incident_id)
        update = next(u for u in incident.updates if u.id == upd.id)
        pages = page_factory(s, lambda: _site_state(ledger, s, incident))
        page = pages(channel.spec.name, channel.template_extension, update, incident, locale)
        post = channel.compose(page)
        root = s.site.output_dir
        missing = [i for i in (*page.site.open, *page.site.maintenance)
                   if i.id != incident.id and not (root / "incidents" / i.id / "index.html").exists()]
        files = dict(post.files)
        for other in missing:
            other_page = pages(channel.spec.name, channel.template_extension, other.latest, other, locale)
            files.update(site_files(other_page, statement=True, month=False, shared=False))
        return replace(post, files=files)

    return render


def _audience(ledger: Ledger, s: Settings, chans: Mapping[str, Channel],
              incident: Incident) -> Audience | None:
    """Per locale, the active subscribers this incident concerns (if a channel has an audience)."""
    if not any(c.has_audience for c in chans.values()):
        return None
    from broadcaster.subscribers import audience

    return audience(ledger, s, incident)


def _outcome(s: Settings, ledger: Ledger, incident_id: str, update_ids: Sequence[str],
             warnings: Sequence[str], *, only_ids: set[int] | None = None) -> Outcome:
    """What these updates' deliveries came to: each post (of `only_ids`, for a retry), and each
    mailing list in numbers with the first recipients still to do (see `report.MailingSummary`)."""
    names = mailing_lists()
    posts = [d for u in update_ids for d in ledger.deliveries(update_id=u, excluded=names)
             if only_ids is None or d.id in only_ids]
    lists = [summary for u in update_ids for summary in mailing_summaries(ledger, update_id=u, lists=names)]
    return Outcome(incident_id, update_ids[-1], s.statement_url(incident_id),
                   [DeliveryOutcome.of(d) for d in posts], warnings=list(warnings), lists=lists)


def _said(chans: Mapping[str, Channel]) -> list[str]:
    """What the channels learned while sending that the person should hear of (`Channel.said`)."""
    return [f"{name}: {line}" for name, channel in chans.items() for line in channel.said()]


def dispatcher(s: Settings, ledger: Ledger, *, retrying: bool = False) -> Dispatcher:
    """The fan-out for this process: the retry policy, the secrets to mask, the progress bar,
    and its share of mailing lists (`retrying` also takes deliveries that failed)."""
    from broadcaster.progress import reporter

    sharing = Sharing.from_settings(s.worker, UNFINISHED if retrying else UNSENT)
    return Dispatcher(ledger, RetryPolicy.from_settings(s.retry), s.masked, progress=reporter.get(),
                      sharing=sharing)


def _site_state(ledger: Ledger, s: Settings, incident: Incident) -> SiteState:
    """The site's lists as they will be once `incident` is recorded."""
    from broadcaster.site.state import site_state

    return site_state(ledger, s, incident)
