"""Fitting an update into a platform's posts: only the explanation is ever shortened.

What a reader must not lose are the essentials: the guidance ("what you can do now"), the
apology, the maintenance window, the next-update promise and the link to the official
statement. The explanation is what may be shortened, because the statement page carries it
whole. A template marks the explanation, and nothing else, with the `shortenable` filter:

    {{ update.message|plain|shortenable }}

Everything outside the mark is essential. An update too long for one post is fitted so:

1. The essentials fit one post: the explanation is cut at a word (an ellipsis marks the cut)
   to fill what is left; with `thread_long` the rest continues in replies, otherwise the
   statement has it.
2. They do not: the first post keeps what stands before the explanation (the title), the
   paragraph with the link and as many other essentials as fit; the remaining essentials
   follow as replies in the incident's thread, whole and in the template's order. A channel
   that cannot reply refuses instead.
3. One essential paragraph longer than a whole post cannot be fitted at all: preflight
   refuses and names the field to shorten.

A cut never falls inside a word when a word boundary fits (or after CJK punctuation, since
Japanese has no spaces), never between an emoji and its modifiers, never inside an accent.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from broadcaster.errors import InputError

#: Unicode noncharacters, reserved for a program's internal use: they never come from a
#: person's text (input refuses them), so they can mark the shortenable span safely.
MARK_START = "\ufdd0"
MARK_END = "\ufdd1"
ELLIPSIS = "…"
#: A cut explanation shorter than this says nothing useful; it is left out instead.
MIN_EXPLANATION = 24
#: Sentence and clause ends in CJK text, where a cut reads naturally.
_CJK_BREAKS = "。、！？，；：）」』"
_JOINERS = {"\u200d", "\ufe0e", "\ufe0f"}
_BLANK_END = re.compile(r"\n\s*\n\s*$")
_BLANK_START = re.compile(r"^\s*\n\s*\n")

Length = Callable[[str], int]


def shortenable(text: str) -> str:
    """Mark `text` as the part of a post that may be shortened (a Jinja2 filter)."""
    return f"{MARK_START}{text}{MARK_END}" if text.strip() else text


def unmarked(text: str) -> str:
    """`text` without the marks, as a reader sees it."""
    return text.replace(MARK_START, "").replace(MARK_END, "")


class EssentialsTooLong(InputError):
    """The essentials cannot be fitted into the channel's posts; a field must be shortened."""


@dataclass(frozen=True)
class Fitted:
    """An update fitted into posts: the first carries the link, the rest are replies."""

    parts: tuple[str, ...]
    #: The explanation was cut; what was cut continues in replies only with `thread_long`.
    shortened: bool = False
    #: Essential paragraphs that did not fit the first post and follow as replies.
    moved: int = 0

    def notes(self) -> tuple[str, ...]:
        """What the person sending should know, for the preview."""
        notes = []
        if self.moved:
            notes.append(f"the essentials do not fit one post: {self.moved} paragraph"
                         f"{'s' * (self.moved != 1)} follow as replies")
        if self.shortened:
            notes.append("the explanation was shortened to fit (the statement page has it whole)")
        if len(self.parts) > 1:
            replies = len(self.parts) - 1
            notes.append(f"continues in {replies} {'reply' if replies == 1 else 'replies'}")
        return tuple(notes)


def fit(
    text: str, *, limit: int, length: Length, link: str, thread_long: bool, replies: bool,
    fields: Mapping[str, str], reply_limit: int | None = None,
) -> Fitted:
    """Fit a rendered `text` (with its explanation marked) into posts of at most `limit`.

    `fields` names the update's essential fields by their text ("guidance" → "Use mobile
    data"), so that a refusal can say which one to shorten. Replies hold at most
    `reply_limit` (default `limit`): room can be left for the link, should a reply have to
    stand alone.
    """
    reply_limit = limit if reply_limit is None else reply_limit
    plain = unmarked(text).strip()
    if length(plain) <= limit:
        return Fitted((plain,))
    post = _Sections.of(text)
    for paragraph in (*post.head, *post.tail):
        if length(paragraph) > limit:
            raise EssentialsTooLong(
                f"the {_field_of(paragraph, fields)} is {length(paragraph)}/{limit} characters on "
                "its own and is never cut: shorten it"
            )
    kept = list(post.tail)
    moved: list[str] = []
    if length(post.compose(kept, "")) > limit:
        if not replies:
            names = _names([_field_of(p, fields) for p in (*post.head, *post.tail)])
            raise EssentialsTooLong(
                f"the {names} need {length(post.compose(kept, ''))}/{limit} characters together "
                "and are never cut: shorten one of them"
            )
        # The first post keeps the link's paragraph, then whichever others fit, in order.
        linked = [i for i, p in enumerate(post.tail) if link and link in p] or [len(post.tail) - 1]
        chosen = set(linked[:1])
        if length(post.compose([post.tail[i] for i in sorted(chosen)], "")) > limit:
            names = _names([_field_of(p, fields) for p in (*post.head, post.tail[linked[0]])])
            raise EssentialsTooLong(
                f"the {names} need more than {limit} characters in the first post, which must "
                "carry them with the link: shorten them"
            )
        for index, paragraph in enumerate(post.tail):
            if index in chosen:
                continue
            if length(post.compose([post.tail[i] for i in sorted(chosen | {index})], "")) <= limit:
                chosen.add(index)
            else:
                moved.append(paragraph)
        kept = [post.tail[i] for i in sorted(chosen)]
    cut, rest = _cut(post.explanation, lambda e: length(post.compose(kept, e)) <= limit, length)
    parts = [post.compose(kept, cut)]
    parts += _pack(moved, reply_limit, length, fields)
    if rest and thread_long:
        parts += _continue(rest, reply_limit, length)
    return Fitted(tuple(parts), shortened=bool(rest), moved=len(moved))


@dataclass(frozen=True)
class _Sections:
    """A post's paragraphs around its explanation: essentials before, essentials after.

    `lead` and `trail` are what shares the explanation's paragraph ("Resolved: " before it).
    """

    head: tuple[str, ...]
    lead: str
    explanation: str
    trail: str
    tail: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> _Sections:
        start, end = text.find(MARK_START), text.find(MARK_END)
        if start < 0 or end < start:
            # Nothing is marked: every paragraph is essential, the first (the title) leads.
            paragraphs = _paragraphs(unmarked(text))
            return cls(tuple(paragraphs[:1]), "", "", "", tuple(paragraphs[1:]))
        before, explanation, after = text[:start], text[start + 1:end], unmarked(text[end + 1:])
        before = unmarked(before)
        chunks = re.split(r"\n\s*\n", before)
        lead = "" if _BLANK_END.search(before) or not before.strip() else chunks.pop()
        tail = re.split(r"\n\s*\n", after)
        trail = "" if _BLANK_START.match(after) or not after.strip() else tail.pop(0)
        return cls(tuple(_paragraphs("\n\n".join(chunks))), lead.lstrip(), explanation.strip(),
                   trail.rstrip(), tuple(_paragraphs("\n\n".join(tail))))

    def compose(self, tail: Sequence[str], explanation: str) -> str:
        middle = f"{self.lead}{explanation}{self.trail}".strip()
        return "\n\n".join(p for p in (*self.head, middle, *tail) if p)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _field_of(paragraph: str, fields: Mapping[str, str]) -> str:
    """Which essential field a paragraph shows ("guidance"), or "template text"."""
    body = paragraph.split(": ", 1)[-1].strip()
    for name, value in fields.items():
        value = value.strip()
        if value and (value in paragraph or body in value):
            return name
    return "template text"


def _names(names: Sequence[str]) -> str:
    unique = list(dict.fromkeys(names))
    return unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " and " + unique[-1]


def _cut(text: str, fits: Callable[[str], bool], length: Length) -> tuple[str, str]:
    """The longest start of `text` (with an ellipsis) that `fits`, and the rest."""
    if not text:
        return "", ""
    if fits(text):
        return text, ""
    at = _longest(text, lambda cut: fits(text[:cut].rstrip() + ELLIPSIS))
    if at is None or length(text[:at].rstrip()) < MIN_EXPLANATION:
        return "", text
    return text[:at].rstrip() + ELLIPSIS, text[at:].strip()


def _pack(paragraphs: Sequence[str], limit: int, length: Length, fields: Mapping[str, str]) -> list[str]:
    """Whole paragraphs into as few posts as hold them, in order."""
    posts: list[str] = []
    for paragraph in paragraphs:
        if length(paragraph) > limit:
            raise EssentialsTooLong(
                f"the {_field_of(paragraph, fields)} is {length(paragraph)} characters, more than a "
                f"reply holds ({limit}) and is never cut: shorten it"
            )
        if posts and length(posts[-1] + "\n\n" + paragraph) <= limit:
            posts[-1] += "\n\n" + paragraph
        else:
            posts.append(paragraph)
    return posts


def _continue(text: str, limit: int, length: Length) -> list[str]:
    """The rest of a cut explanation as replies, each cut at a word with an ellipsis."""
    posts = []
    while text:
        if length(text) <= limit:
            posts.append(text)
            break
        at = _longest(text, lambda cut, text=text: length(text[:cut].rstrip() + ELLIPSIS) <= limit)
        if at is None:
            raise EssentialsTooLong("not even one character of the explanation fits a reply")
        posts.append(text[:at].rstrip() + ELLIPSIS)
        text = text[at:].strip()
    return posts


def _longest(text: str, fits: Callable[[int], bool]) -> int | None:
    """The longest cut of `text` that fits: word boundaries first, then any safe position."""
    for positions in (_word_boundaries(text), _safe_positions(text)):
        best = _bisect(positions, fits)
        if best is not None:
            return best
    return None


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
