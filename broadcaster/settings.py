"""Settings: one TOML file, validated by pydantic, plus secrets from the environment only.

Every error names the file, the key (and its line when it can be found) and what is wrong,
and becomes exit code 2 before anything is sent. Relative paths in the file are relative to
the file's own folder, so cron and CI jobs behave the same as a person in that folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broadcaster import defaults, registry
from broadcaster.channels.base import ChannelSettings
from broadcaster.errors import SettingsError
from broadcaster.masking import secrets_in_environment
from broadcaster.settings_file import (
    ONE_STORE,
    Reading,
    StatePlace,
    checked_http_url,
    checked_postgresql_url,
    checked_zone,
    config_path,
    line_of,
    local_time,
    read_settings_file,
    relative_to,
    statement_url,
)
from broadcaster.vocabulary import Impact

_LOCALE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrganizationSettings(_Section):
    name: str = Field(min_length=1)
    timezone: str = "UTC"
    locales: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    #: How times name the zone, the same in every locale ("CET"); default: the zone's own
    #: abbreviation at that moment (CET in winter, CEST in summer).
    timezone_label: str | None = Field(None, min_length=1, max_length=20)
    #: Who `broadcaster tick` reminds, by email, when a promised next update is overdue.
    staff: list[str] = Field(default_factory=list)

    @field_validator("staff")
    @classmethod
    def _staff_addresses(cls, value: list[str]) -> list[str]:
        from broadcaster.addresses import normalize_address
        from broadcaster.errors import InputError

        try:
            return [normalize_address(a) for a in value]
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return checked_zone(value)

    @field_validator("locales")
    @classmethod
    def _known_locales(cls, value: list[str]) -> list[str]:
        from babel import Locale, UnknownLocaleError

        for code in value:
            # Locales name folders and URLs (/es/incidents/…), so keep them to a safe shape.
            if not _LOCALE.match(code):
                raise ValueError(f"{code!r} is not a locale code such as 'en' or 'pt-BR'")
            try:
                Locale.parse(code, sep="-")
            except (UnknownLocaleError, ValueError):
                raise ValueError(f"{code!r} is not a locale known to Babel") from None
        if len(set(value)) != len(value):
            raise ValueError("a locale is listed twice")
        return value

    @property
    def default_locale(self) -> str:
        return self.locales[0]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_time(self, moment: datetime) -> str:
        """"2026-11-23 14:30 CET": how the CLI shows a time, in the zone the site speaks."""
        return local_time(self.timezone, self.timezone_label, moment)

    def zone_label(self, moment: datetime) -> str:
        """How a time names its zone, the same in every locale: "CET" (or `timezone_label`)."""
        return self.timezone_label or moment.astimezone(self.zone).tzname() or self.timezone


class SiteSettings(_Section):
    base_url: str
    #: Relative to the settings file, given or not (`validate_default`): a command run from
    #: another folder writes the same site.
    output_dir: Path = Field(Path("public"), validate_default=True)
    publish_command: str | None = None
    recent_history: int = Field(defaults.RECENT_HISTORY, ge=0)
    #: Where the pages' "Get updates by email" form posts (default {base_url}/subscribe, which
    #: a reverse proxy sends to `broadcaster serve`); the confirmation links live under it.
    subscribe_url: str | None = None
    #: The organisation's logo (SVG, PNG, WebP or JPEG, at most 64 KB), shown in every page's
    #: header. It is embedded in the pages, so it shows when everything else is down.
    logo: Path | None = None
    #: The organisation's colour for links, buttons and the header's rule. It must read on
    #: white (contrast at least 4.5:1, WCAG AA); the dark theme uses a lighter tint of it.
    accent_color: str = Field("#1d4f91", pattern=r"^#[0-9a-fA-F]{6}$")

    @field_validator("logo")
    @classmethod
    def _logo(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = resolve_path(value, info)
        if path.suffix.lower() not in LOGO_TYPES:
            raise ValueError(f"{path.name}: the logo must be {', '.join(sorted(LOGO_TYPES))}")
        if not path.is_file():
            raise ValueError(f"{path} does not exist")
        if path.stat().st_size > LOGO_MAX_BYTES:
            raise ValueError(f"{path.name} is {path.stat().st_size:,} bytes; a logo of at most "
                             f"{LOGO_MAX_BYTES // 1024} KB keeps every page light (it is embedded in each)")
        return path

    @field_validator("accent_color")
    @classmethod
    def _readable(cls, value: str) -> str:
        ratio = contrast(value, "#ffffff")
        if ratio < 4.5:
            raise ValueError(f"{value} on white has a contrast of {ratio:.1f}:1; text needs at least "
                             "4.5:1 (WCAG AA): choose a darker colour")
        return value.lower()

    @field_validator("subscribe_url")
    @classmethod
    def _subscribe_url(cls, value: str | None) -> str | None:
        return None if value is None else checked_http_url(value, "https://status.example.com/subscribe")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return checked_http_url(value, "https://status.example.com")

    @field_validator("output_dir")
    @classmethod
    def _relative_to_file(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


#: The logo's file types and their media types, and its largest size.
LOGO_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg",
              ".jpeg": "image/jpeg"}
LOGO_MAX_BYTES = 64 * 1024
#: The dark theme's page background (templates/website/_layout.html uses the same).
DARK_BACKGROUND = "#121417"


@cache
def tint_for_dark(colour: str) -> str:
    """`colour` mixed with white until it reads on the dark theme's background (4.5:1)."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    for step in range(21):
        mixed = "#" + "".join(f"{round(c + (255 - c) * step / 20):02x}" for c in rgb)
        if contrast(mixed, DARK_BACKGROUND) >= 4.5:
            return mixed
    return "#ffffff"


def contrast(first: str, second: str) -> float:
    """WCAG's contrast ratio of two #rrggbb colours (1 to 21)."""
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


class StateSettings(_Section):
    #: The embedded ledger: one SQLite file (the default), for one machine.
    #: Relative to the settings file, given or not, like `list` and `show` read it: a hook or
    #: cron job run from another folder records in the same ledger.
    path: Path = Field(Path(defaults.STATE_PATH), validate_default=True)
    #: The shared ledger: a PostgreSQL database ("postgresql://user@host:port/dbname"), for a
    #: team on several machines. The password comes from the environment, never this file.
    url: str | None = None

    @field_validator("path")
    @classmethod
    def _relative_to_file(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)

    @field_validator("url")
    @classmethod
    def _postgresql_without_password(cls, value: str | None) -> str | None:
        return None if value is None else checked_postgresql_url(value)

    @model_validator(mode="after")
    def _one_store(self) -> StateSettings:
        if "path" in self.model_fields_set and self.url is not None:
            raise ValueError(ONE_STORE)
        return self

    @property
    def kind(self) -> str:
        """Which store: "postgresql" when a url is given, else "sqlite"."""
        return "postgresql" if self.url else "sqlite"


class TemplateSettings(_Section):
    #: A folder whose files override the shipped templates (rendered in Jinja2's sandbox).
    dir: Path | None = None

    @field_validator("dir")
    @classmethod
    def _existing_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        folder = resolve_path(value, info)
        if not folder.is_dir():
            raise ValueError(f"{str(folder)!r} is not a folder")
        inside = folder.resolve()
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                raise ValueError(f"{str(path)!r} is a link that leads outside the templates folder "
                                 f"(to {str(path.resolve())!r}); templates are read only from inside it")
        return folder


class RetrySettings(_Section):
    attempts: int = Field(defaults.RETRY_ATTEMPTS, ge=1, le=100)
    initial_wait_seconds: float = Field(defaults.RETRY_INITIAL_WAIT, ge=0)
    max_wait_seconds: float = Field(defaults.RETRY_MAX_WAIT, ge=0)


class ComponentSettings(_Section):
    """A service customers know by name, shown with its state on the status site."""

    name: str = Field(min_length=1, max_length=100)
    group: str | None = Field(None, min_length=1, max_length=100)
    description: str = ""
    #: The name in other locales: { es = "Fibra" }. The JSON keeps `name`.
    names: dict[str, str] = Field(default_factory=dict)


class GroupSettings(_Section):
    """A group of components, to translate its name: [[groups]] name = "Internet", names = {…}."""

    name: str = Field(min_length=1, max_length=100)
    names: dict[str, str] = Field(default_factory=dict)


class RegionSettings(_Section):
    """An area; `postcodes` are the prefixes of the postcodes that belong to it."""

    name: str = Field(min_length=1, max_length=100)
    postcodes: list[str] = Field(default_factory=list)
    names: dict[str, str] = Field(default_factory=dict)

    @field_validator("postcodes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        cleaned = [p.strip().upper().replace(" ", "") for p in value]
        bad = [p for p in cleaned if not re.fullmatch(r"[0-9A-Z-]{1,10}", p)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a postcode prefix (letters, digits and '-', at most 10)")
        return cleaned


class WorkerSettings(_Section):
    """How senders share a mailing list: the command that records an update and any number of
    `broadcaster worker`s claim its recipients in batches, each under a lease."""

    batch: int = Field(defaults.WORKER_BATCH, ge=1, le=100_000)
    #: A batch whose holder stops renewing (killed, cut off) is taken over after this long.
    lease_seconds: float = Field(defaults.WORKER_LEASE, ge=1, le=3600)
    poll_seconds: float = Field(defaults.WORKER_POLL, gt=0, le=600)


class SubscriptionSettings(_Section):
    """Self-service subscription from the status page (double opt-in, served by `serve`)."""

    #: Offer the form on every page (only while [channels.email] is enabled: it sends the
    #: confirmation and everything after).
    enabled: bool = True
    #: An unconfirmed request's link works this long.
    confirm_hours: float = Field(defaults.SUBSCRIBE_CONFIRM_HOURS, gt=0, le=24 * 30)
    #: Form submissions one IP may make an hour; past it, 429 with Retry-After.
    per_ip_per_hour: int = Field(defaults.SUBSCRIBE_PER_IP_PER_HOUR, ge=1)
    #: Confirmation emails one address may get a day, however many requests name it.
    emails_per_address_per_day: int = Field(defaults.SUBSCRIBE_EMAILS_PER_ADDRESS_PER_DAY, ge=1)


class AutomationSettings(_Section):
    """How alerts from monitoring become incidents (`broadcaster serve`)."""

    #: Alert `severity` label -> impact. Unknown severities are "minor".
    severity_impacts: dict[str, Impact] = Field(default_factory=lambda: {
        "critical": Impact.CRITICAL, "error": Impact.MAJOR, "warning": Impact.MINOR, "info": Impact.MINOR,
    })
    #: The alert labels that name the affected component and region.
    component_label: str = "component"
    region_label: str = "region"
    #: Label value -> the name customers know ("payments-api" -> "Payments API").
    components: dict[str, str] = Field(default_factory=dict)
    regions: dict[str, str] = Field(default_factory=dict)
    #: Impacts that are published at once instead of drafted (default: none, a person approves).
    publish_impacts: list[Impact] = Field(default_factory=list)
    #: The channels such an immediate publication goes to (the website always).
    publish_channels: list[str] = Field(default_factory=lambda: ["website"])
    #: At most this many automatic publications an hour; past it, alerts become drafts.
    publish_per_hour: int = Field(3, ge=0)
    #: Alerts accepted per source (alertmanager, grafana, generic) a minute; past it, 429.
    alerts_per_minute: int = Field(30, ge=1)
    #: Changes to one alert group (same groupKey or dedupe_key) a minute; past it, 429.
    changes_per_key_per_minute: int = Field(6, ge=1)
    #: Drafts nobody published or discarded are discarded by `tick` after this many hours.
    draft_expiry_hours: float = Field(72, gt=0)


class Settings(_Section):
    """The whole settings file, validated. Secrets are kept apart and never printed."""

    organization: OrganizationSettings
    site: SiteSettings
    state: StateSettings = Field(default_factory=StateSettings)
    templates: TemplateSettings = TemplateSettings()
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()
    automation: AutomationSettings = AutomationSettings()
    subscriptions: SubscriptionSettings = SubscriptionSettings()
    components: list[ComponentSettings] = Field(default_factory=list)
    groups: list[GroupSettings] = Field(default_factory=list)
    regions: list[RegionSettings] = Field(default_factory=list)
    request_timeout_seconds: float = Field(defaults.REQUEST_TIMEOUT, gt=0)

    _source: Path | None = PrivateAttr(default=None)
    _secrets: dict[str, SecretStr] = PrivateAttr(default_factory=dict)
    _masked: list[SecretStr] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        locales = self.organization.locales
        for kind, items in (("components", self.components), ("groups", self.groups),
                            ("regions", self.regions)):
            seen: set[str] = set()
            for item in items:
                if item.name.casefold() in seen:
                    raise ValueError(f"{kind}: {item.name!r} is listed twice")
                seen.add(item.name.casefold())
                unknown = [loc for loc in item.names if loc not in locales]
                if unknown:
                    raise ValueError(f"{kind}: {item.name!r} names: {unknown[0]!r} is not one of "
                                     f"[organization] locales {locales}")
        return self

    def label(self, name: str, locale: str) -> str:
        """A component, group or region's name as readers of `locale` know it."""
        key = name.casefold()
        for item in (*self.components, *self.groups, *self.regions):
            if item.name.casefold() == key:
                return item.names.get(locale, item.name)
        return name

    def labels(self, names: Sequence[str], locale: str) -> list[str]:
        return [self.label(n, locale) for n in names]

    def known_names(self, names: Sequence[str], kind: Literal["component", "region"]) -> tuple[str, ...]:
        """`names` as configured (case-insensitive); any name when none are configured.

        InputError names the unknown one and lists the known ones.
        """
        from broadcaster import characters
        from broadcaster.errors import InputError

        configured = [c.name for c in (self.components if kind == "component" else self.regions)]
        cleaned = tuple(dict.fromkeys(characters.check(n, kind).strip() for n in names))
        if any(not n for n in cleaned):
            raise InputError(f"a {kind} name cannot be empty")
        if not configured:
            return cleaned
        by_key = {c.casefold(): c for c in configured}
        unknown = [n for n in cleaned if n.casefold() not in by_key]
        if unknown:
            raise InputError(f"{kind} {unknown[0]!r} is not one of the configured {kind}s: "
                             f"{', '.join(configured)}")
        return tuple(dict.fromkeys(by_key[n.casefold()] for n in cleaned))

    @model_validator(mode="after")
    def _channel_locales(self) -> Settings:
        for name, channel in self.channels.items():
            if channel.locale is not None and channel.locale not in self.organization.locales:
                raise ValueError(
                    f"channels.{name}.locale: {channel.locale!r} is not one of "
                    f"[organization] locales {self.organization.locales}"
                )
        return self

    @property
    def source(self) -> Path | None:
        """The file these settings came from (None when built in code, as the drill does)."""
        return self._source

    @property
    def secrets(self) -> Mapping[str, SecretStr]:
        """Secret values by environment variable name, for the enabled channels."""
        return self._secrets

    @property
    def masked(self) -> list[SecretStr]:
        """Every known secret in the environment (any channel's, enabled or not, and the hook
        server's): what messages, logs and the ledger must never contain."""
        return [*self._masked, *(v for v in self._secrets.values() if v not in self._masked)]

    def enabled_channels(self) -> list[str]:
        """Names of enabled channels, the statement's (the website) first."""
        known = registry.channels()
        names = [n for n, c in self.channels.items() if c.enabled]
        return sorted(names, key=lambda n: (not getattr(known.get(n), "publishes_statement", False), n))

    def channel_locale(self, name: str) -> str:
        return self.channels[name].locale or self.organization.default_locale

    def home_url(self, locale: str | None = None) -> str:
        """The status site's front page in `locale`: the default at the root, others under /{locale}/."""
        prefix = "" if locale in (None, self.organization.default_locale) else f"/{locale}"
        return f"{self.site.base_url}{prefix}/"

    @property
    def reading(self) -> Reading:
        """What a command that only reads the ledger uses (see settings_file.py)."""
        return Reading(StatePlace(self.state.path, self.state.url), self.site.base_url,
                       self.organization.default_locale, self.organization.timezone,
                       self.organization.timezone_label)

    @property
    def subscribe_url(self) -> str | None:
        """Where the status pages' subscription form posts, or None when the site offers none
        (switched off, or no enabled email channel to confirm and send with)."""
        if not (self.subscriptions.enabled and self.subscription_channel()):
            return None
        return self.site.subscribe_url or f"{self.site.base_url}/subscribe"

    def subscription_channel(self) -> str | None:
        """The enabled channel that has subscribers (the role, not a name: email today)."""
        known = registry.channels()
        found = [n for n in self.enabled_channels() if getattr(known.get(n), "has_audience", False)]
        return found[0] if found else None

    def statement_url(self, incident_id: str, locale: str | None = None) -> str:
        """The official statement's address, in `locale`."""
        return statement_url(self.site.base_url, self.organization.default_locale, incident_id, locale)


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """A path from the settings file, relative to that file's folder (for channel settings too)."""
    base = (info.context or {}).get("base_dir")
    return relative_to(value, None if base is None else Path(base))


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, validate and return the settings, or raise SettingsError saying what to fix."""
    path = config_path(path)
    raw, text = read_settings_file(path)
    return settings_from_dict(raw, source=path, text=text, environ=environ)


def settings_from_dict(
    raw: Mapping[str, Any],
    *,
    source: Path | None = None,
    text: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate settings given as a dict (a parsed file, or built in code by the drill)."""
    label = str(source) if source else "settings"
    base_dir = source.parent if source else Path.cwd()
    raw = dict(raw)
    raw.setdefault("state", {})  # validated, so that its default path is the file's too
    channels, problems = _channel_settings(raw.pop("channels", {}), base_dir)
    errors = [_describe(p, label, text) for p in problems]
    try:
        settings = Settings.model_validate({**raw, "channels": channels}, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = [_describe(e, label, text) for e in exc.errors()] + errors
    if errors:
        raise SettingsError("\n".join(errors))
    settings._source = source
    settings._secrets = _read_secrets(settings, os.environ if environ is None else environ)
    settings._masked = secrets_in_environment(os.environ if environ is None else environ)
    return settings


def _channel_settings(raw: Any, base_dir: Path) -> tuple[dict[str, ChannelSettings], list[dict[str, Any]]]:
    """Each [channels.NAME] table validated by that channel's own settings model."""
    if not isinstance(raw, dict):
        return {}, [_problem(("channels",), "must be a table of [channels.NAME] sections")]
    known = registry.channels()
    out: dict[str, ChannelSettings] = {}
    problems: list[dict[str, Any]] = []
    for name, table in raw.items():
        channel = known.get(name)
        if not isinstance(table, dict):
            problems.append(_problem(("channels", name), f"must be a table [channels.{name}]"))
            continue
        if channel is None:
            if table.get("enabled"):
                installed = ", ".join(sorted(known))
                problems.append(_problem(("channels", name, "enabled"),
                                         f"no channel named {name!r} is installed (installed: {installed})"))
            continue  # a disabled section for a channel this install lacks is harmless
        for key in table:
            if key in channel.spec.secrets:
                problems.append(_problem(
                    ("channels", name, key),
                    "secrets are read only from the environment; remove it from the file "
                    f"and set {channel.spec.secrets[key]}",
                ))
        try:
            out[name] = channel.spec.settings.model_validate(
                {k: v for k, v in table.items() if k not in channel.spec.secrets},
                context={"base_dir": base_dir},
            )
        except ValidationError as exc:
            problems += [{**e, "loc": ("channels", name, *e["loc"])} for e in exc.errors()]
    for name, channel in known.items():
        if not channel.publishes_statement:
            continue
        if name not in out:
            out[name] = channel.spec.settings(enabled=True)
        elif not out[name].enabled:
            problems.append(_problem(
                ("channels", name, "enabled"),
                f"the {name} publishes the official statement every other channel links to; "
                "it cannot be disabled",
            ))
    return out, problems


def _problem(loc: tuple[str, ...], message: str) -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": "value_error"}


def _read_secrets(settings: Settings, environ: Mapping[str, str]) -> dict[str, SecretStr]:
    known = registry.channels()
    found: dict[str, SecretStr] = {}
    for name in settings.enabled_channels():
        for variable in known[name].spec.secrets.values():
            value = environ.get(variable, "")
            if value:
                found[variable] = SecretStr(value)
    return found


def _describe(error: Mapping[str, Any], label: str, text: str | None) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and section)"
    elif error["type"] == "missing":
        message = "required, but missing"
    elif error["type"] not in ("value_error", "assertion_error") and "input" in error:
        shown = repr(error["input"])
        message += f" (got {shown[:60]})"
    line = line_of(text, loc) if text else None
    where = f"{label}:{line}" if line else label
    return f"{where}: {key}: {message}"
