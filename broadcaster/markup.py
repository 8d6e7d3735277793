"""Message text is Markdown: HTML for the web and email, plain text for social posts.

Raw HTML in a message is never passed through (markdown-it's `html` option is off), and
markdown-it refuses `javascript:` and similar link targets, so a message cannot inject script
into the statement page.
"""

from __future__ import annotations

from functools import cache, lru_cache
from itertools import pairwise

from markdown_it import MarkdownIt
from markdown_it.token import Token


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": True}).enable("linkify")


def to_html(text: str, top: int = 1) -> str:
    """Markdown to safe HTML. With `top`, the text's highest heading becomes an h{top} and
    the others keep their distance below it, so that a long text's own headings (`#` or
    `##`, as its author began) sit under the page's without skipping a level."""
    tokens = _parser().parse(text)
    levels = [int(t.tag[1:]) for t in tokens if t.type == "heading_open"]
    if top != 1 and levels:
        shift = top - min(levels)
        for token in tokens:
            if token.type in ("heading_open", "heading_close"):
                token.tag = f"h{max(1, min(6, int(token.tag[1:]) + shift))}"
    return _parser().renderer.render(tokens, _parser().options, {}).strip()


def lead(text: str) -> str:
    """The first paragraph of a long Markdown text, as plain text: its headings skipped (what
    a post quotes from a postmortem that starts with "## Summary")."""
    tokens = _parser().parse(text)
    for opening, inline in pairwise(tokens):
        if opening.type == "paragraph_open" and inline.children is not None:
            return _inline_plain(inline.children).strip()
    return ""


@lru_cache(maxsize=4096)
def to_plain(text: str) -> str:
    """Markdown to the plain text a social post shows: no markup, links kept readable.

    Kept for the texts seen last: one write renders the same messages in every locale's
    history, component pages and posts, and parsing Markdown is the costly part."""
    blocks: list[tuple[bool, str]] = []  # (is a list item, text)
    line: list[str] = []
    markers: list[str] = []  # "•" for bullets, else the ordered list's next number
    for token in _parser().parse(text):
        kind = token.type
        if kind == "bullet_list_open":
            markers.append("•")
        elif kind == "ordered_list_open":
            markers.append(str(int(token.attrGet("start") or 1)))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            markers.pop()
        elif kind == "list_item_open":
            marker = markers[-1]
            if marker == "•":
                line.append("• ")
            else:
                line.append(f"{marker}. ")
                markers[-1] = str(int(marker) + 1)
        elif kind == "inline" and token.children is not None:
            line.append(_inline_plain(token.children))
        elif kind in ("code_block", "fence"):
            blocks.append((False, token.content.rstrip("\n")))
        elif kind in ("paragraph_close", "heading_close") and line:
            blocks.append((bool(markers), "".join(line)))
            line = []
    # Items of one list sit on consecutive lines; other blocks are separated by a blank line.
    out: list[str] = []
    previous_item = False
    for is_item, block in blocks:
        if out and not (is_item and previous_item):
            out.append("")
        out.append(block)
        previous_item = is_item
    return "\n".join(out).strip()


def _inline_plain(children: list[Token]) -> str:
    parts: list[str] = []
    href_stack: list[tuple[str, int]] = []
    for child in children:
        if child.type == "text" or child.type == "code_inline":
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type == "link_open":
            href_stack.append((str(child.attrGet("href") or ""), len(parts)))
        elif child.type == "link_close" and href_stack:
            href, start = href_stack.pop()
            label = "".join(parts[start:])
            if href and href not in (label, f"http://{label}", f"https://{label}", f"mailto:{label}"):
                parts.append(f" ({href})")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)
