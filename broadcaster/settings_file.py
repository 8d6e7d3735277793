"""The settings file, read, and the few settings a command that only reads the ledger uses.

`broadcaster list` and `show` open the ledger and print. Validating the whole file with
pydantic, and loading every channel to check its table, costs three times the rest of such a
command, so these read the file here and check only the keys they use: where the ledger is,
the site's address (statement links), the time zone and the default locale. The checks are
the full settings' own: settings.py calls the same functions, so a key is never accepted here
and refused there. A command that sends validates everything (`settings.load_settings`).

No pydantic, channel or template import here: tests/test_startup.py keeps it that way.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from broadcaster import defaults
from broadcaster.errors import SettingsError

_HTTP_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")


def config_path(explicit: str | Path | None = None) -> Path:
    """--config, else $BROADCASTER_CONFIG, else ./settings.toml."""
    return Path(explicit or os.environ.get(defaults.CONFIG_ENV) or defaults.CONFIG_FILE)


def read_settings_file(path: Path) -> tuple[dict[str, Any], str]:
    """The file parsed, and its text (for line numbers in errors); SettingsError if it is
    missing, unreadable or not TOML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: settings file not found (pass --config PATH or set {defaults.CONFIG_ENV}; "
            "`broadcaster drill` needs none)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read settings: {exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line N, column M)".
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


# -- checks the full settings share ---------------------------------------------------------


def checked_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # 2 ms at start, for a setting few use

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as 'Europe/Madrid'") from None
    return value


def checked_http_url(value: str, example: str) -> str:
    """An http(s) address without a trailing slash."""
    if not _HTTP_URL.match(value):
        raise ValueError(f"{value!r} is not an http(s) address such as {example!r}")
    return value.rstrip("/")


def checked_postgresql_url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ValueError("must be postgresql://user@host:port/dbname")
    if parts.password is not None:
        raise ValueError("holds a password: remove it from the file and set BROADCASTER_STATE_PASSWORD "
                         "(or PGPASSWORD, or ~/.pgpass)")
    return value.strip()


def relative_to(value: Path, base: Path | None) -> Path:
    """A path from the settings file, relative to that file's folder."""
    value = value.expanduser()
    return value if value.is_absolute() or base is None else base / value


def statement_url(base_url: str, default_locale: str, incident_id: str, locale: str | None = None) -> str:
    """The official statement's address, in `locale`: the default locale at the root, others
    under /{locale}/."""
    prefix = "" if locale in (None, default_locale) else f"/{locale}"
    return f"{base_url}{prefix}/incidents/{incident_id}/"


def local_time(timezone: str, label: str | None, moment: datetime) -> str:
    """"2026-11-23 14:30 CET": how the CLI shows a time, in the zone the site speaks; the zone
    named by `label` if given, else by its own abbreviation at that moment (CET, CEST)."""
    if timezone == "UTC":  # the default: no need for the zone database (2 ms at every start)
        here = moment.astimezone(UTC)
    else:
        from zoneinfo import ZoneInfo

        here = moment.astimezone(ZoneInfo(timezone))
    return f"{here:%Y-%m-%d %H:%M} {label or here.tzname() or timezone}"


# -- what reading the ledger needs -----------------------------------------------------------


class StatePlace(NamedTuple):
    """Where the ledger is: a SQLite file, or a PostgreSQL database when `url` is given."""

    path: Path
    url: str | None = None


class Reading(NamedTuple):
    """The settings `list` and `show` use. `Settings.reading` gives the same from settings
    validated whole."""

    state: StatePlace
    base_url: str
    default_locale: str
    timezone: str = "UTC"
    timezone_label: str | None = None

    def statement_url(self, incident_id: str, locale: str | None = None) -> str:
        return statement_url(self.base_url, self.default_locale, incident_id, locale)

    def local_time(self, moment: datetime) -> str:
        return local_time(self.timezone, self.timezone_label, moment)


def reading_settings(path: str | Path | None = None) -> Reading:
    """The settings a reading command uses, from the file, each checked as the full settings
    check it; SettingsError naming the file, line and key otherwise."""
    source = config_path(path)
    raw, text = read_settings_file(source)
    problems: list[str] = []

    def value(table: str, key: str, kind: type, check: Any = None, *, required: bool = False) -> Any:
        section = raw.get(table)
        try:
            if not isinstance(section, dict) or key not in section:
                if required:
                    raise ValueError("required, but missing")
                return None
            found = section[key]
            if not isinstance(found, kind) or (kind is list and not found):
                # pydantic's words, so that the full settings and these say the same
                raise ValueError(f"Input should be a valid {'string' if kind is str else 'list'} "
                                 f"(got {found!r:.60})")
            return check(found) if check else found
        except ValueError as exc:
            line = line_of(text, [table, key])
            where = f"{source}:{line}" if line else str(source)
            problems.append(f"{where}: {table}.{key}: {exc}")
            return None

    zone = value("organization", "timezone", str, checked_zone)
    label = value("organization", "timezone_label", str)
    locales = value("organization", "locales", list)
    base_url = value("site", "base_url", str, lambda v: checked_http_url(v, "https://status.example.com"),
                     required=True)
    url = value("state", "url", str, checked_postgresql_url)
    state_path = value("state", "path", str)
    if url is not None and state_path is not None:
        problems.append(f"{source}: state: {ONE_STORE}")
    if problems:
        raise SettingsError("\n".join(problems))
    place = StatePlace(relative_to(Path(state_path or defaults.STATE_PATH), source.parent), url)
    return Reading(place, base_url, str(locales[0]) if locales else "en", zone or "UTC", label)


#: Both stores named: which one is meant cannot be guessed.
ONE_STORE = "give path (SQLite, one machine) or url (PostgreSQL, a team), not both"


def line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line of `a.b.key` in a TOML file, so the error points where to look."""
    if not loc:
        return None
    *tables, key = loc
    header = None
    if tables:
        dotted = r"\s*\.\s*".join(map(re.escape, tables))
        header = re.compile(rf"^\s*\[\s*{dotted}\s*\]")
    in_table = header is None
    for number, line in enumerate(text.splitlines(), start=1):
        if header is not None and header.match(line):
            in_table = True
            continue
        if in_table and re.match(r"^\s*\[", line) and header is not None:
            in_table = False
        if in_table and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    if tables:
        return line_of(text, tables)
    return None
