"""X's length rule: 280 *weighted* characters (twitter-text v3).

A URL always counts 23, CJK and emoji weigh 2, most Latin text weighs 1.
`twitter-text-parser` implements the count; where an over-long update is cut is the
business of `fitting`, which every channel with a limit shares.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache

LIMIT = 280


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
