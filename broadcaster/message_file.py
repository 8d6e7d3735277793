"""Words from files: --message-file (an update's words in several locales, one TOML table per
locale) and a postmortem's Markdown (`postmortem --file`, one file per locale).

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


#: The longest postmortem file read: a long one is a few thousand words (30 KB); past this it
#: is more likely the wrong file (a log, a PDF) than a postmortem.
POSTMORTEM_MAX_BYTES = 256 * 1024


def read_markdown_file(path: Path, option: str) -> str:
    """A Markdown file's text; every error names the option and the file."""
    try:
        size = path.stat().st_size
        if size > POSTMORTEM_MAX_BYTES:
            raise InputError(f"{option} {path}: {size:,} bytes; a postmortem is at most "
                             f"{POSTMORTEM_MAX_BYTES // 1024} KB (is it the right file?)")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{option} {path}: a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{option} {path}: not UTF-8 text (a bad byte at offset {exc.start}); "
                         "save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None
    return text.removeprefix("\ufeff")
