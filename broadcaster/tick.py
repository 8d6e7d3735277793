"""`broadcaster tick`: the work that falls due with time, safe every minute and twice at once.

Three things fall due. Planned maintenance moves from scheduled to in progress at its start and
to completed at its end, each step announced through every channel like any update. And
staff are reminded, by email, when a promised next update is overdue: once per promise (the
update that made it), to `[organization] staff`, through the first configured channel that
offers staff notices (`StaffNotices`: email, through the SMTP server of `[channels.email]`).
Ticks take a lock, so two at once do the work once. A reminder is claimed in the ledger
before it is sent and the claim is dropped if sending fails, so a failed one is tried again
at the next tick. And at midnight in the organisation's zone the status page's uptime bars
move on to the new day, even when nothing was published (`site.build.turn_the_day`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broadcaster.channels.base import StaffNotices
from broadcaster.errors import DeliveryError
from broadcaster.ledger import Ledger
from broadcaster.report import Result
from broadcaster.settings import Settings


@dataclass
class TickReport(Result):
    reminded: list[str] = field(default_factory=list)  # update ids whose promise was overdue
    maintenance: list[str] = field(default_factory=list)  # "id: new status"
    expired: list[str] = field(default_factory=list)  # draft updates nobody published in time
    site: str | None = None  # the status page moved on to a new day
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 3 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {"reminded": self.reminded, "maintenance": self.maintenance, "expired": self.expired,
                "site": self.site, "problems": self.problems, "exit_code": self.exit_code}

    def text(self) -> str:
        lines = [f"maintenance {m}" for m in self.maintenance]
        if self.reminded:
            lines.append(f"Reminded staff of {len(self.reminded)} overdue update(s).")
        if self.expired:
            lines.append(f"Discarded {len(self.expired)} draft(s) left unpublished past "
                         "[automation] draft_expiry_hours.")
        if self.site:
            lines.append(self.site[0].upper() + self.site[1:] + ".")
        if not lines:
            lines.append("Nothing due.")
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


def tick(settings: Settings, ledger: Ledger, now: datetime | None = None) -> TickReport:
    now = now or datetime.now(UTC)
    report = TickReport()
    with ledger.service_lock("tick"):
        _expire_drafts(settings, ledger, now, report)
        for incident in ledger.incidents(open_only=True):
            if incident.is_maintenance:
                _advance(settings, incident, now, report)
                continue
            promise = next((u for u in reversed(incident.published) if u.next_update_at), None)
            if promise is None or promise.next_update_at is None or promise.next_update_at > now:
                continue
            if promise is not incident.published[-1]:
                continue  # a later update came out, so the promise was kept
            if not settings.organization.staff:
                report.problems.append(f"incident {incident.id}: the next update is overdue, but "
                                       "[organization] staff is empty: nobody to remind")
                continue
            if not ledger.claim_reminder(promise.id, now):
                continue  # reminded already (by this tick or another)
            try:
                _remind(settings, incident, promise, now)
            except DeliveryError as exc:
                ledger.release_reminder(promise.id)
                report.problems.append(f"incident {incident.id}: reminder not sent: {exc}")
            else:
                report.reminded.append(promise.id)
        _turn_the_day(settings, ledger, now, report)
    return report


def _turn_the_day(settings: Settings, ledger: Ledger, now: datetime, report: TickReport) -> None:
    from broadcaster.site.build import turn_the_day

    try:
        report.site = turn_the_day(settings, ledger, now)
    except DeliveryError as exc:
        report.problems.append(f"the status page could not move on to a new day: {exc}")


def _advance(settings: Settings, incident: Any, now: datetime, report: TickReport) -> None:
    """Scheduled → in progress at its start, → completed at its end, announced on every channel."""
    from broadcaster import pipeline, request
    from broadcaster.errors import BroadcasterError
    from broadcaster.model import Status

    steps = []
    if incident.status is Status.SCHEDULED and incident.starts_at <= now:
        steps.append(Status.IN_PROGRESS)
    if incident.status in (Status.SCHEDULED, Status.IN_PROGRESS) and incident.ends_at <= now:
        steps.append(Status.COMPLETED)
    for status in steps:
        try:
            outcome = pipeline.send(settings, request.maintenance_step(settings, incident.id, status))
        except BroadcasterError as exc:
            report.problems.append(f"maintenance {incident.id}: could not move to {status.value}: {exc}")
            return
        report.maintenance.append(f"{incident.id}: {status.value}")
        if outcome.exit_code:
            report.problems.append(f"maintenance {incident.id}: {status.value} recorded, some channels not "
                                   f"done; `broadcaster retry {incident.id}` finishes them")


def _expire_drafts(settings: Settings, ledger: Ledger, now: datetime, report: TickReport) -> None:
    """Discard drafts nobody published within `draft_expiry_hours` (kept for the record): an
    alert storm's leftovers must not wait in the list for ever. A postmortem's draft is not
    one: its review takes days, and it waits until someone publishes or discards it."""
    from datetime import timedelta

    from broadcaster.model import Kind

    oldest = now - timedelta(hours=settings.automation.draft_expiry_hours)
    for incident in ledger.incidents_with_drafts():
        drafts = incident.drafts
        if drafts and drafts[-1].created_at < oldest and drafts[-1].kind is not Kind.POSTMORTEM:
            with ledger.incident_lock(incident.id):
                report.expired += ledger.discard_drafts(incident.id)


def _remind(settings: Settings, incident: Any, promise: Any, now: datetime) -> None:
    channel = _notices(settings)
    default = settings.organization.default_locale
    late = int((now - promise.next_update_at).total_seconds() // 60)
    subject = f"Overdue: the next update on \"{incident.title(default)}\" ({incident.id})"
    text = (
        f"The last update on incident {incident.id} promised the next one by "
        f"{promise.next_update_at.astimezone(settings.organization.zone):%Y-%m-%d %H:%M} "
        f"{settings.organization.zone_label(promise.next_update_at)}. That was {late} minutes ago, "
        f"and customers are waiting.\n\nStatement: {settings.statement_url(incident.id)}\n\n"
        f"Post it with:\n  broadcaster update {incident.id} --status identified --message \"…\" "
        "--next-update 30m\n\n-- broadcaster tick (one reminder per promise)\n"
    )
    channel.send_notice(settings.organization.staff, subject, text)


def _notices(settings: Settings) -> StaffNotices:
    """The first configured channel that can notify staff (enabled for the public or not)."""
    from broadcaster import registry
    from broadcaster.errors import PermanentDeliveryError
    from broadcaster.preflight import open_channel

    known = registry.channels()
    for name in settings.channels:
        if issubclass(known[name], StaffNotices):
            return open_channel(settings, name)  # type: ignore[return-value]
    raise PermanentDeliveryError("reminders are emailed: add a [channels.email] section (host, sender)")
