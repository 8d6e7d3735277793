"""X's text rules: weighted length, and fitting an update into one post or a thread.

X counts 280 *weighted* characters (twitter-text v3): a URL always counts 23, CJK and emoji
weigh 2, most Latin text weighs 1. `twitter-text-parser` implements the count; this module
only decides where to cut. A cut falls at a word boundary (or after CJK punctuation, since
Japanese has no spaces), never inside the statement link, never between an emoji and its
modifiers, and is marked with an ellipsis.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

LIMIT = 280
ELLIPSIS = "…"
#: Sentence and clause ends in CJK text, where a cut reads naturally.
_CJK_BREAKS = "。、！？，；：）」』"
_JOINERS = {"\u200d", "\ufe0e", "\ufe0f"}


@cache
def _parser() -> Callable[[str], object]:
    with warnings.catch_warnings():
        # twitter-text-parser 3.0 loads its emoji table through the deprecated pkg_resources.
        warnings.simplefilter("ignore")
        from twitter_text import parse_tweet
    return parse_tweet


def weighted_length(text: str) -> int:
    """The length X measures against its 280 limit."""
    return _parser()(text).weightedLength  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Split:
    """An update cut for X: the first post (which carries the link), then any replies."""

    parts: Sequence[str]
    #: Text was cut: with one part it was shortened and the rest dropped.
    shortened: bool


def split(text: str, link: str, *, thread: bool, limit: int = LIMIT) -> Split:
    """Fit `text` into one post, shortening it (or, with `thread`, continuing in replies).

    The link stays whole and stays in the first post, with whatever follows it in the
    template; the words before it are what gets cut.
    """
    text = text.strip()
    if weighted_length(text) <= limit:
        return Split([text], shortened=False)
    at = text.find(link) if link else -1
    if at < 0:
        head, tail, gap = text, "", ""
    else:
        head = text[:at].rstrip()
        between = text[len(head):at]
        gap = "\n" * min(between.count("\n"), 2) or " "
        tail = text[at:].strip()
    suffix = ELLIPSIS + gap + tail if tail else ELLIPSIS
    cut = _longest_fit(head, lambda prefix: prefix.rstrip() + suffix, limit)
    first = head[:cut].rstrip() + suffix
    rest = head[cut:].strip()
    if not thread or not rest:
        return Split([first], shortened=True)
    parts = [first]
    while rest:
        if weighted_length(rest) <= limit:
            parts.append(rest)
            break
        cut = _longest_fit(rest, lambda prefix: prefix.rstrip() + ELLIPSIS, limit)
        parts.append(rest[:cut].rstrip() + ELLIPSIS)
        rest = rest[cut:].strip()
    return Split(parts, shortened=True)


def _longest_fit(text: str, shape: Callable[[str], str], limit: int) -> int:
    """The longest cut of `text` whose shaped prefix fits in `limit`.

    Word boundaries first; only when no word boundary fits (a long run of CJK text, or a
    single enormous word) any position that does not split a character sequence.
    """
    for positions in (_word_boundaries(text), _safe_positions(text)):
        best = _bisect(positions, lambda cut: weighted_length(shape(text[:cut])) <= limit)
        if best is not None:
            return best
    raise ValueError("not even one character fits beside the link; shorten the template")


def _bisect(positions: list[int], fits: Callable[[int], bool]) -> int | None:
    """The largest position for which `fits` holds (it holds for a prefix of the list)."""
    low, high, best = 0, len(positions) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if fits(positions[middle]):
            best, low = positions[middle], middle + 1
        else:
            high = middle - 1
    return best


def _word_boundaries(text: str) -> list[int]:
    spaces = [m.start() for m in re.finditer(r"\s+", text) if m.start() > 0]
    breaks = [i + 1 for i, ch in enumerate(text[:-1]) if ch in _CJK_BREAKS]
    return sorted(set(spaces + breaks))


def _safe_positions(text: str) -> list[int]:
    """Cuts that keep emoji sequences (ZWJ, modifiers, flags, tags) and accents whole."""
    safe = []
    indicators = 0  # regional indicators in a row before i: flags are pairs of them
    for i in range(1, len(text)):
        indicators = indicators + 1 if _is_indicator(text[i - 1]) else 0
        if (text[i] in _JOINERS or text[i - 1] == "\u200d"
                or unicodedata.category(text[i]) in ("Mn", "Mc", "Me", "Sk")
                or 0x1F3FB <= ord(text[i]) <= 0x1F3FF  # skin tones
                or 0xE0020 <= ord(text[i]) <= 0xE007F  # tag sequences (subdivision flags)
                or (_is_indicator(text[i]) and indicators % 2 == 1)):
            continue
        safe.append(i)
    return safe


def _is_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF
