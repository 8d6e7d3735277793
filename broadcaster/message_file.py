"""--message-file: the words of an update in several locales, one TOML table per locale.

    [en]
    title = "Card payments failing"
    message = "Some card payments fail. We are on it."

    [es]
    title = "Fallan los pagos con tarjeta"
    message = "Algunos pagos con tarjeta fallan. Estamos en ello."
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from broadcaster.errors import InputError

FIELDS = ("title", "message", "guidance", "apology")


def read_message_file(path: Path) -> dict[str, dict[str, str]]:
    """Tables by locale; every error names the file (and the line when TOML gives one)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--message-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--message-file {path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"--message-file {path}: not valid TOML: {exc}") from None
    out: dict[str, dict[str, str]] = {}
    for locale, table in data.items():
        if not isinstance(table, dict):
            raise InputError(f"--message-file {path}: {locale!r} must be a table like [{locale}]")
        for key, value in table.items():
            if key not in FIELDS:
                raise InputError(
                    f"--message-file {path}: [{locale}] {key}: unknown field "
                    f"(fields: {', '.join(FIELDS)})"
                )
            if not isinstance(value, str):
                raise InputError(f"--message-file {path}: [{locale}] {key}: must be text")
        out[locale] = dict(table)
    return out
