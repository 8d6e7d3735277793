"""Preflight: render every channel and locale and validate it all before anything is sent.

One problem anywhere (a missing credential, a post over its limit, a post without the
statement link, a template error) stops the whole announcement: a half-sent incident is
worse than a late one, and a wrong post cannot be taken back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from broadcaster import message_rules, registry
from broadcaster.channels.base import Channel, ChannelContext, Post
from broadcaster.errors import InputError, PreflightError
from broadcaster.model import Incident, Update
from broadcaster.render import Page
from broadcaster.settings import Settings


@dataclass(frozen=True)
class Planned:
    """One delivery as it will be sent: the channel, its locale and the rendered post."""

    channel: str
    locale: str
    post: Post
    length: int
    limit: int | None
    #: For channels with an audience: the subscribers who get this post (one delivery each).
    recipients: tuple[str, ...] = ()


@dataclass
class Preview:
    """Everything an update would send, and what a person should know before sending it."""

    update: Update
    incident: Incident
    statement_url: str
    planned: list[Planned] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def open_channels(settings: Settings, only: Sequence[str] | None = None) -> dict[str, Channel]:
    """Instances of the enabled channels (all, or `only` those plus the website)."""
    enabled = settings.enabled_channels()
    if only:
        unknown = [name for name in only if name not in enabled]
        if unknown:
            raise InputError(
                f"--channel {unknown[0]}: not an enabled channel (enabled: {', '.join(enabled)})"
            )
        names = [n for n in enabled if n in only or registry.channels()[n].spec.publishes_statement]
    else:
        names = enabled
    return {name: open_channel(settings, name) for name in names}


def open_channel(settings: Settings, name: str) -> Channel:
    """One configured channel (enabled or not) with its secrets and the request timeout."""
    cls = registry.channels()[name]
    secrets = {v: settings.secrets[v] for v in cls.spec.secrets.values() if v in settings.secrets}
    return cls(settings.channels[name], ChannelContext(settings, secrets, settings.request_timeout_seconds))


#: Per locale, the subscribers an update reaches (for channels with an audience).
Audience = Mapping[str, Sequence[str]]


def locales_of(settings: Settings, channel: Channel, audience: Audience | None = None) -> list[str]:
    """The locales a channel publishes in: one delivery each (all at once for the website)."""
    if channel.spec.audience:
        return [loc for loc in settings.organization.locales if (audience or {}).get(loc)]
    if channel.spec.every_locale:
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
    preview = Preview(update, incident, settings.statement_url(incident.id))
    problems: list[str] = []
    fresh = targets is None
    if targets is None:
        targets = [(name, loc) for name, ch in channels.items()
                   for loc in locales_of(settings, ch, audience)]
        preview.warnings.extend(
            f"{name}: no subscriber follows these components or regions; nobody is emailed"
            for name, ch in channels.items() if ch.spec.audience and not locales_of(settings, ch, audience)
        )
    today = datetime.now(settings.organization.zone).date()
    for name in dict.fromkeys(name for name, _ in targets):
        channel = channels[name]
        refusals, warnings = channel.readiness(today)
        problems.extend(f"{name}: {p}" for p in ([] if drafting else refusals))
        preview.warnings.extend(f"{name}: {w}" for w in (warnings + refusals if drafting else warnings))
        if drafting or not channel.spec.secrets_required:
            continue
        for variable in channel.spec.secrets.values():
            if variable not in settings.secrets:
                problems.append(f"{name}: {variable} is not set (secrets come from the environment)")
    shown_locales: set[str] = set()
    for name, locale in targets:
        channel = channels[name]
        spec = channel.spec
        page = pages(name, spec.template_extension, update, incident, locale)
        label = name if spec.every_locale else f"{name} ({locale})"
        try:
            post = channel.compose(page)
        except InputError as exc:
            problems.append(f"{label}: {exc}")
            continue
        shown_locales.update(settings.organization.locales if spec.every_locale else [locale])
        lengths = [channel.length(part) for part in (post.text, *post.continuation)]
        length = lengths[0]
        for number, part_length in enumerate(lengths, start=1):
            if spec.limit is not None and part_length > spec.limit:
                which = f"post {number}: " if post.continuation else ""
                problems.append(f"{label}: {which}{part_length}/{spec.limit} characters; shorten the text")
        preview.warnings.extend(f"{label}: {note}" for note in post.notes)
        if spec.needs_statement_link:
            link = settings.statement_url(incident.id, locale)
            for part, content in post.linked_parts().items():
                if link not in content:
                    problems.append(f"{label}: the {part} does not link to the statement {link}")
        recipients = tuple((audience or {}).get(locale, ())) if spec.audience else ()
        preview.planned.append(Planned(name, locale, post, length, spec.limit, recipients))
    for locale in sorted(shown_locales - set(update.texts)):
        fallback = next(iter(update.texts))
        preview.warnings.append(
            f"no {locale!r} text given; readers in {locale!r} will see the {fallback!r} text"
        )
    if fresh:  # a retry finishes what was already checked and sent in part: no second opinion
        subjects = [(p.locale, p.post.subject) for p in preview.planned if p.post.subject]
        findings = message_rules.review(update, incident, default_locale=settings.organization.default_locale,
                                        subjects=subjects, drafting=drafting)
        problems.extend(findings.refusals)
        preview.warnings.extend(findings.warnings)
    if problems:
        raise PreflightError(problems)
    return preview
