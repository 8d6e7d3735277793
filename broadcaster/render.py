"""Rendering: the shipped templates, a user folder that overrides them, and what they see.

Templates live at `<channel>/<name>.<locale>.<ext>` (for instance `twitter/announce.es.txt`);
a locale without its own template falls back to the default locale's, then to a locale-free
`<channel>/<name>.<ext>` (the website's pages take their words from the strings files).
Every template, shipped or the user's, runs in Jinja2's immutable sandbox with
`StrictUndefined`, and `.html` templates are autoescaped. Interface words (status names and
the like) come from `strings.<locale>.toml`, overridable the same way.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from markupsafe import Markup

from broadcaster import markup
from broadcaster.channels.fitting import shortenable, unmarked
from broadcaster.clock import Clock
from broadcaster.defaults import HISTORY_STORIES
from broadcaster.errors import InputError
from broadcaster.model import Incident, Kind, Update
from broadcaster.settings import Settings
from broadcaster.site.state import SiteState, areas, component_slug
from broadcaster.site.uptime import ComponentUptime, Day
from broadcaster.vocabulary import CLOSED


def shipped_templates() -> Path:
    """The templates installed with broadcaster."""
    import broadcaster.templates

    return Path(broadcaster.templates.__file__).parent


def channel_template_folders() -> list[Path]:
    """The template folders that installed channels ship in their own packages
    (`Channel.templates_package`), in the registry's order."""
    from importlib import resources

    from broadcaster import registry

    folders: list[Path] = []
    for channel in registry.channels().values():
        if channel.templates_package:
            folder = Path(str(resources.files(channel.templates_package)))
            if folder not in folders:
                folders.append(folder)
    return folders


class TemplateProblem(InputError):
    """A template failed to render; the message names the template and line."""


class _ConfinedLoader(jinja2.FileSystemLoader):
    """Jinja2's file loader, but a template must really lie inside its folder.

    FileSystemLoader refuses `..` in names, yet follows symbolic links: a link in the
    templates folder to /proc/self/environ would publish every secret on the public site.
    """

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        source, filename, uptodate = super().get_source(environment, template)
        real = Path(filename).resolve()
        if not any(real.is_relative_to(Path(folder).resolve()) for folder in self.searchpath):
            raise TemplateProblem(f"{template}: {filename} leads outside the templates folder; "
                                  "templates are read only from inside it")
        return source, filename, uptodate


#: The template a channel without one for a kind renders it with.
STAND_IN_TEMPLATES = {Kind.POSTMORTEM.value: Kind.UPDATE.value}


class Templates:
    """The template environment for one settings file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The user's folder wins, then each channel's own package (channels from other
        # packages ship their templates there), then broadcaster's.
        self.folders = [settings.templates.dir] if settings.templates.dir else []
        self.folders += channel_template_folders()
        self.folders.append(shipped_templates())
        self.env = _environment(tuple(self.folders))
        self._strings: dict[str, dict[str, Any]] = {}
        #: What every page of one site state shows (open incidents, history, the lookup's
        #: areas), computed once per (state, locale) rather than for each of thousands of pages.
        self._site_views: dict[tuple[int, str], tuple[object, dict[str, Any]]] = {}
        self._digest: str | None = None
        self._clocks: dict[str, Clock] = {}

    def clock(self, locale: str) -> Clock:
        """The clock of `locale`, one for every page these templates render."""
        if locale not in self._clocks:
            self._clocks[locale] = Clock(self.settings, locale)
        return self._clocks[locale]

    def inputs_digest(self) -> str:
        """A digest of everything besides the incident that a statement page is made from:
        broadcaster's version, the settings, and every template and strings file (the user's
        folder, channels', shipped). `site build` skips a statement whose digest is unchanged."""
        if self._digest is None:
            import hashlib

            from broadcaster import __version__

            settings = self.settings.model_dump_json(serialize_as_any=True)  # channels' own fields too
            digest = hashlib.sha256(f"{__version__}\n{settings}".encode())
            for folder in self.folders:
                for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix != ".pyc"):
                    digest.update(f"\n{path.relative_to(folder)}\n".encode())
                    digest.update(path.read_bytes())
            self._digest = digest.hexdigest()
        return self._digest

    def site_views(self, site: SiteState, variant: str, build: Callable[[], dict[str, Any]], *,
                   month: bool = False) -> dict[str, Any]:
        """`build()`'s site-wide variables for (site, variant: the locale and the kind of
        page), computed once for the state and every month page made from it (with `month`:
        once for this very state, whose month page is being written)."""
        owner: object = site if month else site.shared
        key = (id(owner), variant + "/month" * month)
        found = self._site_views.get(key)
        if found is None or found[0] is not owner:
            found = self._site_views[key] = (owner, build())
        return found[1]

    def find(self, channel: str, name: str, locale: str, extension: str) -> str:
        """The template for `locale`, else the default locale's, else the locale-free one.

        A channel written before a kind existed has no template for it: it renders that kind
        with the template `STAND_IN_TEMPLATES` names (a postmortem as an update)."""
        default = self.settings.organization.default_locale
        candidates = [f"{channel}/{name}.{code}.{extension}" for code in dict.fromkeys([locale, default])]
        candidates.append(f"{channel}/{name}.{extension}")
        for template in candidates:
            if any((folder / template).is_file() for folder in self.folders):
                return template
        if name in STAND_IN_TEMPLATES:
            return self.find(channel, STAND_IN_TEMPLATES[name], locale, extension)
        raise TemplateProblem(
            f"no template {candidates[0]} (looked in {', '.join(map(str, self.folders))})"
        )

    def render(self, template: str, variables: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(template).render(variables)
        except SecurityError as exc:
            raise TemplateProblem(f"{template}: refused by the template sandbox: {exc}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"{exc.filename or template}:{exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"{template}: {exc}") from None

    def strings(self, locale: str) -> dict[str, Any]:
        """Interface words for `locale` (status names, headings), shipped or overridden."""
        if locale not in self._strings:
            merged: dict[str, Any] = {}
            default = self.settings.organization.default_locale
            for code in dict.fromkeys([default, locale]):
                for folder in reversed(self.folders):
                    path = folder / f"strings.{code}.toml"
                    if path.is_file():
                        _deep_merge(merged, _strings_file(path, path.stat().st_mtime_ns))
            self._strings[locale] = merged
        return self._strings[locale]



@cache
def _environment(folders: tuple[Path, ...]) -> jinja2.Environment:
    """One sandboxed environment per template folders, kept for the process: compiling the
    templates again for every update cost most of a draft's time (a hook server drafts many).
    Jinja2 still notices a template file that changed (auto_reload)."""
    env = ImmutableSandboxedEnvironment(
        loader=_ConfinedLoader(list(folders)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = lambda text, top=1: Markup(markup.to_html(text, top))
    env.filters["plain"] = markup.to_plain
    env.filters["datetime"] = jinja2.pass_context(_format_datetime)
    env.filters["date"] = jinja2.pass_context(_format_date)
    env.filters["time"] = jinja2.pass_context(_format_time)
    env.filters["window"] = jinja2.pass_context(_format_window)
    env.filters["shortenable"] = shortenable
    env.filters["summary"] = summary
    env.filters["few"] = _few
    return env

@cache
def _strings_file(path: Path, mtime: int) -> dict[str, Any]:
    """A strings file, parsed once per version of it (the mtime is part of the key)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateProblem(f"{path}: not valid TOML: {exc}") from None


def _deep_merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        elif isinstance(value, dict):  # a copy: the parsed file is cached and must stay as read
            into[key] = {}
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _format_datetime(context: Any, value: datetime | None) -> str:
    return context["clock"].datetime(value)


def _format_date(context: Any, value: datetime | None) -> str:
    return context["clock"].date(value)


def _format_time(context: Any, value: datetime | None) -> str:
    return context["clock"].time(value)


def _format_window(context: Any, starts: datetime | None, ends: datetime | None) -> str:
    return context["clock"].window(starts, ends)


def _few(names: Sequence[str]) -> str:
    """The first name and how many more: "Madrid +2" (where room is short, as in subjects)."""
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"


@dataclass
class Page:
    """One (channel × update × locale) ready to render; what a channel's `compose` gets."""

    channel: str
    extension: str
    update: Update
    incident: Incident
    locale: str
    templates: Templates
    site: SiteState = field(default_factory=SiteState)

    @property
    def kind(self) -> Kind:
        return self.update.kind

    @property
    def locales(self) -> list[str]:
        return list(self.templates.settings.organization.locales)

    @property
    def statement_url(self) -> str:
        return self.templates.settings.statement_url(self.incident.id, self.locale)

    @property
    def settings(self) -> Settings:
        return self.templates.settings

    @property
    def publishes_statement(self) -> bool:
        """Whether this page is for the status site (which alone shows the no-JS area list)."""
        from broadcaster import registry

        channel = registry.channels().get(self.channel)
        return bool(channel and channel.publishes_statement)

    def for_locale(self, locale: str) -> Page:
        return Page(self.channel, self.extension, self.update, self.incident, locale,
                    self.templates, self.site)

    def render(self, name: str, *, marked: bool = False, **extra: Any) -> str:
        """Render `<channel>/<name>.<locale>.<ext>` with the standard variables.

        `marked` keeps the marks of the shortenable explanation for `fitting`; any other
        caller gets the text as a reader sees it.
        """
        template = self.templates.find(self.channel, name, self.locale, self.extension)
        text = self.templates.render(template, {**self.variables, **extra})
        return text if marked else unmarked(text)

    def essentials(self) -> dict[str, str]:
        """The update's never-cut fields as they read in this locale, by name (for refusals)."""
        text = self.update.text(self.locale)
        return {"title": self.incident.title(self.locale), "guidance": markup.to_plain(text.guidance),
                "apology": markup.to_plain(text.apology)}

    @cached_property
    def variables(self) -> dict[str, Any]:
        settings = self.settings
        locale = self.locale
        view = IncidentViews(settings, locale, self.templates.strings(locale))
        common = common_variables(self.templates, locale)
        return {
            **common,
            "locales": [
                {**entry, "statement_url": settings.statement_url(self.incident.id, entry["code"])}
                for entry in common["locales"]
            ],
            "statement_url": self.statement_url,
            "incident": view.incident(self.incident),
            "update": view.update(self.update),
            **self.templates.site_views(self.site, f"{locale}/{self.publishes_statement}",
                                        lambda: self._site_variables(view)),
            # The month page being written: the one thing the variants of a state differ in.
            **self.templates.site_views(self.site, locale, lambda: {"month": {
                "key": self.site.month[0], "name": _month_name(self.site.month[0], locale),
                "incidents": [view.incident(i) for i in self.site.month[1]]} if self.site.month else None},
                month=True),
        }

    def digest(self, template: str) -> str:
        """What a statement or month page is made of, as a digest: the incident (every update,
        every word) or the month's incidents, and everything else such a page depends on
        (`Templates.inputs_digest`). `site build` skips a page whose digest is unchanged."""
        import hashlib

        made_of = self.incident if template == "statement" else self.site.month
        text = f"{self.templates.inputs_digest()}\n{template}\n{made_of!r}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _component_pages(self, view: IncidentViews) -> dict[str, dict[str, Any]]:
        """Per component (canonical name): its page's address, name, state and incidents."""
        settings, locale = self.settings, self.locale
        states = {c.name: c.status for c in self.site.components}
        pages = {}
        for c in settings.components:
            found = _component_incidents(self.site.history, c.name)
            pages[c.name] = {
                "url": f"{settings.home_url(locale)}components/{component_slug(c.name)}/",
                "name": settings.label(c.name, locale), "canonical": c.name,
                "status": states.get(c.name, "operational"), "description": c.description,
                "incidents": [view.incident(i) for i in found[:HISTORY_STORIES]],
                "more": max(0, len(found) - HISTORY_STORIES)}
        return pages

    def _site_variables(self, view: IncidentViews) -> dict[str, Any]:
        """What depends on the site's state, not on this incident: the same for every page of
        a state and locale (cached by `Templates.site_views`)."""
        settings = self.settings
        locale = self.locale
        return {
            "open_incidents": [view.incident(i) for i in self.site.open],
            "maintenance": [view.incident(i) for i in self.site.maintenance],
            "recent_incidents": [view.incident(i) for i in self.site.recent],
            "indicator": self.site.indicator,
            "component_groups": _grouped(self.site.components, settings, locale),
            "uptime": {u.name: _uptime_view(u, self.templates.strings(locale), locale)
                       for u in self.site.uptime} if self.publishes_statement else {},
            # The latest months told in full, and each component's own page (site pages only).
            "history": [{"key": key, "name": _month_name(key, locale),
                         "incidents": [view.incident(i) for i in found[:HISTORY_STORIES]],
                         "more": max(0, len(found) - HISTORY_STORIES)} for key, found in self.site.history]
            if self.publishes_statement else [],
            "component_pages": self._component_pages(view) if self.publishes_statement else {},
            "regions": [{"name": r.name, "label": r.names.get(locale, r.name), "postcodes": r.postcodes}
                        for r in settings.regions],
            # What concerns each region, for readers without JavaScript (the lookup's answers):
            # only the site's pages show it, so posts and emails do not pay for it.
            "areas": [{"label": settings.label(name, locale), "items": [view.incident(i) for i in items]}
                      for name, items in areas(settings, self.site, datetime.now(UTC))]
            if self.publishes_statement else [],
            "months": [{"key": key, "count": count, "name": _month_name(key, locale)}
                       for key, count in self.site.months],
            # Relative path from this locale's pages to the site root (JSON and feeds live there).
            "root": "" if locale == settings.organization.default_locale else "../",
        }


def _component_incidents(history: Sequence[tuple[str, Sequence[Incident]]], name: str) -> list[Incident]:
    key = name.casefold()
    return [i for _, found in history for i in found
            if key in {c.casefold() for u in i.published for c in u.components}]


def common_variables(templates: Templates, locale: str) -> dict[str, Any]:
    """What every page in `locale` has, incident or not: the organisation, the words, the clock,
    the languages (a page of `broadcaster serve`, such as unsubscribe, uses these alone)."""
    from babel import Locale

    settings = templates.settings
    return {
        "organization": {"name": settings.organization.name},
        "locale": locale,
        "babel_locale": Locale.parse(locale, sep="-"),
        "timezone": settings.organization.zone,
        "clock": templates.clock(locale),
        "locales": [{"code": code, "name": Locale.parse(code, sep="-").get_display_name(code),
                     "home": settings.home_url(code)} for code in settings.organization.locales],
        "t": templates.strings(locale),
        "home": settings.home_url(locale),
        "alternates": {code: settings.home_url(code) for code in settings.organization.locales},
        "subscribe": subscription_form(settings, locale),
        "brand": brand(settings),
    }


def brand(settings: Settings) -> dict[str, str | None]:
    """The organisation's look: its accent (and the tint that reads on the dark theme) and its
    logo as a data: URI, embedded so that the page needs nothing else to show it."""
    from broadcaster.settings import tint_for_dark

    logo = settings.site.logo
    return {"accent": settings.site.accent_color, "accent_dark": tint_for_dark(settings.site.accent_color),
            "logo": _data_uri(logo, logo.stat().st_mtime_ns) if logo else None}


@cache
def _data_uri(path: Path, mtime: int) -> str:
    import base64

    from broadcaster.settings import LOGO_TYPES

    return f"data:{LOGO_TYPES[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def subscription_form(settings: Settings, locale: str) -> dict[str, Any] | None:
    """What the "Get updates by email" form offers in `locale` (None: the site offers none):
    where it posts, the components by group and the regions, named as readers know them."""
    url = settings.subscribe_url
    if url is None:
        return None
    groups: dict[str | None, list[dict[str, str]]] = {}
    for c in settings.components:
        groups.setdefault(c.group, []).append({"name": c.name, "label": settings.label(c.name, locale)})
    return {"url": url,
            "groups": [{"name": settings.label(g, locale) if g else None, "components": members}
                       for g, members in groups.items()],
            "regions": [{"name": r.name, "label": settings.label(r.name, locale)} for r in settings.regions]}


def _grouped(states: Sequence[Any], settings: Settings, locale: str) -> list[dict[str, Any]]:
    """Components in their groups, in the order configured (ungrouped ones on their own), named
    as readers of `locale` know them."""
    groups: dict[str | None, list[Any]] = {}
    for state in states:
        groups.setdefault(state.group, []).append(state)
    return [{"name": settings.label(name, locale) if name else None,
             "components": [{**vars(s), "name": settings.label(s.name, locale), "canonical": s.name}
                            for s in members]}
            for name, members in groups.items()]


def _uptime_view(uptime: ComponentUptime, t: dict[str, Any], locale: str) -> dict[str, Any]:
    """One component's bar in `locale`: each day's state and its accessible name ("12 Nov:
    Partial outage for 1 h 20 min"), and the percentage."""
    from babel.dates import format_date
    from babel.numbers import format_decimal

    words = t["uptime"]
    code = locale.replace("-", "_")

    def label(day: Day) -> str:
        when = format_date(day.day, "d MMM", locale=code)
        if not day.seconds:
            return words["day_ok"].format(day=when)
        spells = [words["spell"].format(state=t["component"][state], duration=duration(seconds, words))
                  for state, seconds in day.seconds]
        return words["day_bad"].format(day=when, states=", ".join(spells))

    return {"percent": words["percent"].format(percent=format_decimal(uptime.percent, "0.00", locale=code)),
            "days": [{"date": d.day.isoformat(), "state": d.state, "label": label(d)} for d in uptime.days],
            "label": words["label"].format(days=len(uptime.days)), "span": len(uptime.days)}


#: How much of an incident's first message a history shows.
SUMMARY_LENGTH = 200


def summary(text: str, length: int = SUMMARY_LENGTH) -> str:
    """The first paragraph of `text`, cut at a word before `length` characters ("…" marks a cut)."""
    first = text.strip().split("\n\n", 1)[0].replace("\n", " ")
    if len(first) <= length:
        return first
    cut = first[:length].rsplit(" ", 1)[0].rstrip(" ,;:.")
    return cut + "…"


def duration(seconds: float, words: dict[str, str]) -> str:
    """"1 h 20 min", "45 min", "under 1 min": how long a state lasted, to the minute."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return words["under_a_minute"]
    hours, minutes = divmod(minutes, 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes else [])
    return " ".join(parts)


@cache
def _month_name(key: str, locale: str) -> str:
    """"November 2026", "Noviembre de 2026": a heading, so capitalised in every language."""
    from babel.dates import format_skeleton

    name = format_skeleton("yMMMM", datetime.strptime(key, "%Y-%m"), locale=locale.replace("-", "_"))
    return name[:1].upper() + name[1:]


class IncidentViews:
    """Plain dicts of an incident in one locale: what templates may read, and nothing else."""

    def __init__(self, settings: Settings, locale: str, words: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.locale = locale
        self.words = words or {}

    def update(self, update: Update) -> dict[str, Any]:
        text = update.text(self.locale)
        return {
            "id": update.id,
            "seq": update.seq,
            "kind": update.kind.value,
            "status": update.status.value,
            "impact": update.impact.value,
            "components": self.settings.labels(update.components, self.locale),
            "regions": self.settings.labels(update.regions, self.locale),
            "title": text.title,
            "message": text.message,
            "guidance": text.guidance,
            "apology": text.apology,
            "created_at": update.created_at,
            "next_update_at": update.next_update_at,
            "starts_at": update.starts_at,
            "ends_at": update.ends_at,
            "translated": self.locale in update.texts,
            # A postmortem's first paragraph: what a post quotes before its link.
            "lead": markup.lead(text.message) if update.kind is Kind.POSTMORTEM else "",
        }

    def incident(self, incident: Incident) -> dict[str, Any]:
        published = incident.timeline or incident.updates
        resolved = [u for u in published if u.status in CLOSED]
        postmortems = incident.postmortems
        return {
            "id": incident.id,
            "title": incident.title(self.locale),
            "status": incident.status.value,
            "impact": incident.impact.value,
            "components": self.settings.labels(incident.components, self.locale),
            "regions": self.settings.labels(incident.regions, self.locale),
            "created_at": incident.created_at,
            "updated_at": incident.updated_at,
            "resolved_at": resolved[-1].created_at if resolved else None,
            # How long it lasted ("2 h 15 min"), and its first lines: what a history lists.
            "duration": duration((resolved[-1].created_at - incident.created_at).total_seconds(),
                                 self.words["uptime"])
            if resolved and not incident.is_maintenance and "uptime" in self.words else None,
            # Its first message (Markdown): a history shows its first lines (`|plain|summary`).
            "first_message": published[0].text(self.locale).message,
            "max_impact": incident.max_impact.value,
            "is_open": incident.is_open,
            "is_maintenance": incident.is_maintenance,
            "starts_at": incident.starts_at,
            "ends_at": incident.ends_at,
            "statement_url": self.settings.statement_url(incident.id, self.locale),
            "updates": [self.update(u) for u in reversed(published)],
            # The latest version of its postmortem, when the first was published and, if it
            # was corrected since, when.
            "postmortem": {**self.update(postmortems[-1]), "published_at": postmortems[0].created_at,
                           "revised_at": postmortems[-1].created_at if len(postmortems) > 1 else None}
            if postmortems else None,
        }


def page_factory(
    settings: Settings, site: Callable[[], SiteState] | None = None
) -> Callable[[str, str, Update, Incident, str], Page]:
    """Pages share one template environment and (lazily) one view of the site."""
    templates = Templates(settings)
    state: list[SiteState] = []

    def make(channel: str, extension: str, update: Update, incident: Incident, locale: str) -> Page:
        if not state:
            state.append(site() if site else SiteState())
        return Page(channel, extension, update, incident, locale, templates, state[0])

    return make
