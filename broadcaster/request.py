"""Input into a validated request: what a person or a monitor asked for, checked before anything
is read from the ledger or rendered.

A `Request` names the incident and how to build its next update from the incident as it is
in the ledger at that moment (`build`): the pipeline calls it twice, once against a read-only
view (so bad input writes nothing) and again under the incident's lock (so an update that
another operator recorded meanwhile comes first). Every check that needs no ledger happens
here, as early as possible, with a message that names the option at fault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from broadcaster import characters
from broadcaster.errors import InputError
from broadcaster.model import Impact, Incident, Kind, Status, Text, Update, checked_id, new_incident_id
from broadcaster.next_update import parse_next_update
from broadcaster.vocabulary import UpdateStatus

if TYPE_CHECKING:
    from broadcaster.settings import Settings

#: Per-locale words: {"es": {"title": …, "message": …}}; the default locale's fill gaps in the
#: arguments (as a --message-file does).
Translations = Mapping[str, Mapping[str, str]]
NextUpdate = datetime | timedelta | str | None
#: The next update, built from the incident as the ledger has it now (None for a new one).
Build = Callable[[Incident | None, datetime], Update]


@dataclass(frozen=True)
class Request:
    """A checked request: the incident, how to build its next update, and where to send it."""

    incident_id: str
    build: Build
    #: A new incident (nothing to read from the ledger first).
    new: bool = False
    #: Only these channels (None: every enabled one).
    channels: Sequence[str] | None = None


def new_incident(
    s: Settings, *, kind: Kind, status: Status, impact: Impact | str, words: dict[str, str],
    components: Sequence[str], regions: Sequence[str], translations: Translations | None,
    channels: Sequence[str] | None, draft: bool, next_update: NextUpdate = None,
    window: tuple[datetime, datetime] | None = None,
) -> Request:
    """A new incident (or maintenance) and its first update."""
    incident_id = new_incident_id()
    checked_impact = impact_of(impact)
    comps, regs = s.known_names(components, "component"), s.known_names(regions, "region")
    texts = texts_of(s, words, translations, None)

    def build(previous: Incident | None, now: datetime) -> Update:
        return Update(
            id=f"{incident_id}-1", incident_id=incident_id, seq=1, kind=kind, status=status,
            impact=checked_impact, components=comps, regions=regs, texts=texts, created_at=now,
            next_update_at=parse_next_update(next_update, now, s.organization.zone),
            draft=draft, starts_at=window[0] if window else None, ends_at=window[1] if window else None,
        )

    return Request(incident_id, build, new=True, channels=channels)


def follow_up(
    s: Settings, incident_id: str, *, kind: Kind, status: Status, words: dict[str, str],
    translations: Translations | None, channels: Sequence[str] | None, draft: bool,
    impact: Impact | str | None = None, components: Sequence[str] | None = None,
    regions: Sequence[str] | None = None, next_update: NextUpdate = None,
    clear_guidance: bool = False, no_apology: bool = False,
) -> Request:
    """The next update (or the resolution) of an open incident.

    A draft on top of a draft of the same kind revises it: a reviewed draft is one update.
    The guidance carries over unless this is the resolution or `clear_guidance`.
    """
    checked_id(incident_id)
    new_impact = impact_of(impact) if impact is not None else None
    comps = s.known_names(components, "component") if components else None
    regs = s.known_names(regions, "region") if regions else None

    def build(previous: Incident | None, now: datetime) -> Update:
        assert previous is not None
        last = previous.updates[-1]
        as_draft = draft or previous.is_draft
        revising = as_draft and last.draft and (
            (kind is Kind.UPDATE and last.kind in (Kind.ANNOUNCE, Kind.UPDATE)) or kind is last.kind
        )
        before = Incident(previous.id, previous.created_at, previous.updates[:-1]) if revising else previous
        if before.updates and not before.is_open:
            raise InputError(f"incident {incident_id} is resolved; announce a new incident instead")
        if last.draft and not as_draft:
            raise InputError(
                f"incident {incident_id} has a draft waiting (update {last.seq}, {last.kind.value}): "
                f"publish it (`broadcaster publish {incident_id}`), revise it with --draft, or "
                f"discard it (`broadcaster discard {incident_id}`) first"
            )
        seq = last.seq if revising else previous.next_seq
        carry = kind is not Kind.RESOLVE and not clear_guidance
        return Update(
            id=f"{incident_id}-{seq}", incident_id=incident_id, seq=seq,
            kind=last.kind if revising else kind, status=status,
            impact=new_impact or last.impact,
            components=comps or last.components, regions=regs or last.regions,
            texts=texts_of(s, words, translations, last, carry_guidance=carry),
            created_at=now, next_update_at=parse_next_update(next_update, now, s.organization.zone),
            draft=as_draft, starts_at=last.starts_at, ends_at=last.ends_at, apology_waived=no_apology,
        )

    return Request(incident_id, build, channels=channels)


#: Which maintenance statuses each step may start from (None: a reschedule).
MAINTENANCE_STEPS = {
    Status.IN_PROGRESS: {Status.SCHEDULED},
    Status.COMPLETED: {Status.SCHEDULED, Status.IN_PROGRESS},
    Status.CANCELLED: {Status.SCHEDULED, Status.IN_PROGRESS},
    None: {Status.SCHEDULED, Status.IN_PROGRESS},
}


def maintenance_step(
    s: Settings, incident_id: str, status: Status | None, *, window: tuple[datetime, datetime] | None = None,
    message: str = "", translations: Translations | None = None, channels: Sequence[str] | None = None,
) -> Request:
    """One step of a maintenance's life, in words from the strings unless a message is given."""
    checked_id(incident_id)
    step = status.value if status else "rescheduled"
    words = {loc: (w.get("message") or "").strip() for loc, w in (translations or {}).items()}
    words[s.organization.default_locale] = message.strip()
    for loc, text in words.items():
        characters.check(text, "--message" + ("" if loc == s.organization.default_locale else f"-{loc}"))

    def build(previous: Incident | None, now: datetime) -> Update:
        assert previous is not None
        if not previous.is_maintenance or previous.status not in MAINTENANCE_STEPS[status]:
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
        texts = {loc: Text(previous.title(loc), words.get(loc) or templates.strings(loc)["maintenance"][step],
                           guidance=last.texts[loc].guidance if keeps and loc in last.texts else "")
                 for loc in s.organization.locales}
        seq = previous.next_seq
        return last._replace(id=f"{incident_id}-{seq}", seq=seq, status=new_status,
                             texts=texts, created_at=now, next_update_at=None, draft=False,
                             starts_at=starts, ends_at=ends)

    return Request(incident_id, build, channels=channels)


def postmortem(
    s: Settings, incident_id: str, bodies: Mapping[str, str], *, draft: bool = False,
    revise: bool = False, channels: Sequence[str] | None = None,
) -> Request:
    """The postmortem of a resolved incident: `bodies` is its Markdown per locale (the
    default locale's required).

    It is one more update, of kind postmortem, that keeps the incident as the resolution left
    it (status, impact, components): the statement page shows it in a section of its own and
    every channel replies with it in the incident's thread. A draft on top of a postmortem
    draft revises it. Once one is published, `revise` corrects it on the statement page only:
    followers are not told twice.
    """
    checked_id(incident_id)
    default = s.organization.default_locale
    option = {loc: "--file" + ("" if loc == default else f"-{loc}") for loc in bodies}
    for locale in bodies:
        if locale not in s.organization.locales:
            raise InputError(f"{option[locale]}: {locale!r} is not one of [organization] locales "
                             f"{s.organization.locales}")
    for locale, body in bodies.items():
        characters.check(body, option[locale])
        if not body.strip():
            raise InputError(f"{option[locale]}: the postmortem is empty")
    if not (bodies.get(default) or "").strip():
        raise InputError(f"--file: the postmortem in {default!r} (the default locale) is required")
    if revise and draft:
        raise InputError("--revise and --draft: a revision corrects the statement page only; "
                         "check it with --dry-run, then publish it")
    if revise and channels:
        raise InputError("--revise corrects the statement page only; --channel does not apply")
    if revise:
        from broadcaster import registry

        channels = [n for n in s.enabled_channels() if n in registry.statement_channels()]
        if not channels:
            raise InputError("--revise corrects the statement page, and no enabled channel "
                             "publishes one ([channels.website] is off)")

    def build(previous: Incident | None, now: datetime) -> Update:
        assert previous is not None
        last, done = previous.updates[-1], previous.postmortems
        if previous.is_maintenance:
            raise InputError(f"{incident_id} is a maintenance: postmortems are for incidents")
        if last.draft and last.kind is not Kind.POSTMORTEM:
            raise InputError(f"incident {incident_id} has a {last.kind.value} draft waiting: publish "
                             f"or discard it first")
        if previous.is_draft or previous.is_open:
            raise InputError(f"incident {incident_id} is {previous.status.value}: a postmortem comes "
                             f"after the resolution (`broadcaster resolve {incident_id}`)")
        if done and not revise:
            raise InputError(
                f"incident {incident_id} already has a postmortem (published "
                f"{s.organization.local_time(done[0].created_at)}); pass "
                "--revise to correct it on the statement page (it is not announced again)")
        if revise and not done:
            raise InputError(f"incident {incident_id} has no published postmortem to revise "
                             "(publish one first, without --revise)")
        if last.draft and not draft:
            raise InputError(
                f"incident {incident_id} has a postmortem draft waiting: publish it (`broadcaster "
                f"publish {incident_id}`), revise it with --draft, or discard it (`broadcaster "
                f"discard {incident_id}`) first")
        revising = last.draft  # a postmortem draft: this one takes its place
        base = previous.timeline[-1]
        texts = {loc: Text(previous.title(loc), bodies[loc].strip())
                 for loc in s.organization.locales if (bodies.get(loc) or "").strip()}
        seq = last.seq if revising else previous.next_seq
        return base._replace(id=f"{incident_id}-{seq}", seq=seq, kind=Kind.POSTMORTEM, texts=texts,
                             created_at=now, next_update_at=None, draft=draft, apology_waived=False)

    return Request(incident_id, build, channels=channels)


# -- single values -------------------------------------------------------------------------


def update_status(value: Status | str) -> Status:
    """The status of an update: one of investigating, identified, monitoring."""
    status = status_of(value)
    if status is Status.RESOLVED:
        raise InputError("--status resolved: use `broadcaster resolve` to close an incident")
    if status.value not in {s.value for s in UpdateStatus}:
        raise InputError(f"--status {status.value}: not one of investigating, identified, monitoring")
    return status


def one_of(flag: str, field: str, flagged: bool, value: str, translations: Translations | None) -> None:
    """Refuse `flag` (--no-apology, --clear-guidance) beside `field` given in any locale."""
    given = bool(value) or any((t or {}).get(field) for t in (translations or {}).values())
    if flagged and given:
        raise InputError(f"{flag} and --{field}: give one or the other")


def window_of(starts: datetime | str, ends: datetime | str, s: Settings) -> tuple[datetime, datetime]:
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


def impact_of(value: Impact | str) -> Impact:
    try:
        return Impact(value)
    except ValueError:
        raise InputError(f"--impact {value!r}: not one of {', '.join(i.value for i in Impact)}") from None


def status_of(value: Status | str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise InputError(f"--status {value!r}: not one of {', '.join(s.value for s in Status)}") from None


def texts_of(
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
