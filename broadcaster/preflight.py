"""Preflight: render every channel and locale and validate it all before anything is sent.

One problem anywhere (a missing credential, a post over its limit, a post without the
statement link, a template error) stops the whole announcement: a half-sent incident is
worse than a late one, and a wrong post cannot be taken back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from broadcaster import message_rules, registry
from broadcaster.channels.base import AudienceChannel, Channel, ChannelContext, Post
from broadcaster.errors import InputError, PreflightError
from broadcaster.model import Incident, Update
from broadcaster.render import Page, duration
from broadcaster.settings import Settings


@dataclass(frozen=True)
class Planned:
    """One delivery as it will be sent: the channel, its locale and the rendered post."""

    channel: str
    locale: str
    post: Post
    length: int
    limit: int | None
    #: For channels with an audience: how many subscribers get this post (one delivery each).
    recipients: int = 0
    #: Where the post goes, one delivery each (`Channel.destinations`).
    destinations: tuple[str, ...] = ("",)


@dataclass
class Preview:
    """Everything an update would send, and what a person should know before sending it."""

    update: Update
    incident: Incident
    statement_url: str
    planned: list[Planned] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Who the channels with an audience reach (streamed from the ledger when recorded).
    audience: Audience | None = None


def open_channels(settings: Settings, only: Sequence[str] | None = None) -> dict[str, Channel]:
    """Instances of the enabled channels (all, or `only` those plus the statement's)."""
    enabled = settings.enabled_channels()
    if only:
        unknown = [name for name in only if name not in enabled]
        if unknown:
            raise InputError(
                f"--channel {unknown[0]}: not an enabled channel (enabled: {', '.join(enabled)})"
            )
        statements = registry.statement_channels()
        names = [n for n in enabled if n in only or n in statements]
    else:
        names = enabled
    return {name: open_channel(settings, name) for name in names}


def open_channel(settings: Settings, name: str) -> Channel:
    """One configured channel (enabled or not) with its secrets and the request timeout."""
    cls = registry.channels()[name]
    secrets = {v: settings.secrets[v] for v in cls.spec.secrets.values() if v in settings.secrets}
    return cls(settings.channels[name], ChannelContext(settings, secrets, settings.request_timeout_seconds))


@dataclass(frozen=True)
class Audience:
    """The subscribers an update reaches (channels with an audience): how many per locale, and
    how to record them. Those who follow everything (or everyone, `everyone`) are recorded
    set-based by the ledger (`selections`); `each` goes through the rest that the update
    concerns again, (locale, address) a chunk at a time from the ledger. A list of a million
    is counted and recorded, never held."""

    counts: Mapping[str, int]
    each: Callable[[], Iterator[tuple[str, str]]]
    #: The incident concerns every active subscriber (it names no component or region).
    everyone: bool
    #: The organization's locales, the default first: a subscriber's other locale gets it.
    locales: tuple[str, ...]

    def count(self, locale: str) -> int:
        return self.counts.get(locale, 0)


def locales_of(settings: Settings, channel: Channel, audience: Audience | None = None) -> list[str]:
    """The locales a channel publishes in: one delivery each (all at once for the statement)."""
    if channel.has_audience:
        return [loc for loc in settings.organization.locales if audience and audience.count(loc)]
    if channel.publishes_statement:
        return [settings.organization.default_locale]
    return [settings.channel_locale(channel.spec.name)]


def check(
    settings: Settings,
    channels: dict[str, Channel],
    pages: Callable[[str, str, Update, Incident, str], Page],
    update: Update,
    incident: Incident,
    targets: Sequence[tuple[str, str]] | None = None,
    audience: Audience | None = None,
    drafting: bool = False,
) -> Preview:
    """Render and validate (channel, locale) `targets` (default: every channel's locales).

    A draft is checked like anything else except for credentials, which are needed only when
    it is published: the hook server that drafts an alert need not hold the platforms' keys.
    """
    preview = Preview(update, incident, settings.statement_url(incident.id), audience=audience)
    problems: list[str] = []
    fresh = targets is None
    if targets is None:
        targets = [(name, loc) for name, ch in channels.items()
                   for loc in locales_of(settings, ch, audience)]
        preview.warnings.extend(
            f"{name}: no subscriber follows these components or regions; nobody is emailed"
            for name, ch in channels.items() if ch.has_audience and not locales_of(settings, ch, audience)
        )
    for name in dict.fromkeys(name for name, _ in targets):
        _readiness(settings, name, channels[name], drafting, problems, preview.warnings)
    shown_locales: set[str] = set()
    for name, locale in targets:
        channel = channels[name]
        page = pages(name, channel.template_extension, update, incident, locale)
        planned = _planned(settings, channel, page, locale, audience, problems, preview.warnings)
        if planned is not None:
            preview.planned.append(planned)
            shown_locales.update(settings.organization.locales if channel.publishes_statement else [locale])
    for locale in sorted(shown_locales - set(update.texts)):
        fallback = next(iter(update.texts))
        preview.warnings.append(
            f"no {locale!r} text given; readers in {locale!r} will see the {fallback!r} text"
        )
    if fresh:  # a retry finishes what was already checked and sent in part: no second opinion
        preview.warnings.extend(_paced(channels, audience))
        subjects = [(p.locale, p.post.subject) for p in preview.planned if p.post.subject]
        findings = message_rules.review(update, incident, default_locale=settings.organization.default_locale,
                                        subjects=subjects, drafting=drafting)
        problems.extend(findings.refusals)
        preview.warnings.extend(findings.warnings)
    if problems:
        raise PreflightError(problems)
    return preview


def _paced(channels: Mapping[str, Channel], audience: Audience | None) -> list[str]:
    """How long a list takes at the rate its relay allows, when that is more than a minute:
    a million at 14 a second is most of a day, which whoever sends it should know before."""
    if audience is None:
        return []
    total = sum(audience.counts.values())
    notes = []
    for name, channel in channels.items():
        rate = channel.rate if isinstance(channel, AudienceChannel) else None
        if rate and total / rate > 60:
            notes.append(f"{name}: {total:,} recipients at {rate:g} a second ([channels.{name}] rate) take "
                         f"about {duration(total / rate, {'under_a_minute': 'under 1 min'})} to send")
    return notes


def _readiness(settings: Settings, name: str, channel: Channel, drafting: bool, problems: list[str],
               warnings: list[str]) -> None:
    """The channel's own set-up today and its credentials (not needed for a draft)."""
    refusals, notes = channel.readiness(datetime.now(settings.organization.zone).date())
    problems.extend(f"{name}: {p}" for p in ([] if drafting else refusals))
    warnings.extend(f"{name}: {w}" for w in (notes + refusals if drafting else notes))
    if drafting or not channel.spec.secrets_required:
        return
    for variable in channel.spec.secrets.values():
        if variable not in settings.secrets:
            problems.append(f"{name}: {variable} is not set (secrets come from the environment)")


def _planned(settings: Settings, channel: Channel, page: Page, locale: str, audience: Audience | None,
             problems: list[str], warnings: list[str]) -> Planned | None:
    """One channel's post in one locale, checked against its limit and for the statement link;
    None (and the problem noted) if it cannot be rendered."""
    name, limit = channel.spec.name, channel.limit
    label = name if channel.publishes_statement else f"{name} ({locale})"
    try:
        post = channel.compose(page)
    except InputError as exc:
        problems.append(f"{label}: {exc}")
        return None
    lengths = [channel.length(part) for part in (post.text, *post.continuation)]
    for number, part_length in enumerate(lengths, start=1):
        if limit is not None and part_length > limit:
            which = f"post {number}: " if post.continuation else ""
            problems.append(f"{label}: {which}{part_length}/{limit} characters; shorten the text")
    warnings.extend(f"{label}: {note}" for note in post.notes)
    if not channel.publishes_statement:  # every other post must lead to the statement
        link = settings.statement_url(page.incident.id, locale)
        for part, content in post.linked_parts().items():
            if link not in content:
                problems.append(f"{label}: the {part} does not link to the statement {link}")
    recipients = audience.count(locale) if audience and channel.has_audience else 0
    destinations = ("",) if channel.has_audience else channel.destinations()
    return Planned(name, locale, post, lengths[0], limit, recipients, destinations)
