"""Which characters text from outside may contain: what a person types, nothing else.

Control characters (but tab and line breaks) break posts, email headers and terminals;
surrogates are what undecodable bytes become (`surrogateescape`: invalid UTF-8 on a command
line); Unicode noncharacters are reserved for a program's own use (templates mark the
shortenable explanation with them, see channels/fitting.py). All three are bad input, refused
with the place they were found, before anything is written or sent.
"""

from __future__ import annotations

import unicodedata

from broadcaster.errors import InputError


def check(value: str, where: str) -> str:
    """`value` unchanged, or InputError naming `where` and the first bad character's position."""
    for index, char in enumerate(value):
        if char in "\t\n\r":
            continue
        code = ord(char)
        category = unicodedata.category(char)
        if category in ("Cc", "Cs") or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
            kind = {"Cc": "a control character", "Cs": "not valid UTF-8"}.get(category, "a noncharacter")
            raise InputError(f"{where}: character U+{code:04X} at position {index + 1} is not allowed "
                             f"({kind})")
    return value
