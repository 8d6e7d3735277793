"""Counting what a reader sees as one character: Mastodon and Bluesky limit posts in graphemes.

A grapheme is one user-perceived character (Unicode UAX #29 extended grapheme cluster): 👍🏽
is two code points and one grapheme, "é" may be one or two code points and is one grapheme.
Mastodon counts `grapheme_length` (500 by default) and Bluesky 300 graphemes; counting code
points instead would refuse posts the platform accepts, or cut an emoji from its skin tone.
The `regex` module implements UAX #29 (`\\X`); the standard `re` does not.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

#: A link as Mastodon's and Bluesky's link detection find it: a scheme, then no spaces; closing
#: punctuation at its end belongs to the sentence, not the link.
URL = re.compile(r"https?://[^\s<>\"]+?(?=[.,;:!?)\]'\"]*(?:\s|$))")


@cache
def _cluster() -> Any:
    import regex  # imported on first count: channel modules load for settings, enabled or not

    return regex.compile(r"\X")


def count(text: str) -> int:
    """How many graphemes `text` has."""
    if text.isascii():  # every ASCII character but CR LF is a grapheme of its own
        return len(text) - text.count("\r\n")
    return len(_cluster().findall(text))
