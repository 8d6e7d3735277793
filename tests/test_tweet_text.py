"""X's weighted length and where a long update is cut (twitter-text v3 rules)."""

from __future__ import annotations

import pytest

from broadcaster.channels.tweet_text import ELLIPSIS, split, weighted_length

LINK = "https://status.example.com/incidents/k7m2p9x4qa/"


def test_weights_follow_twitter_text():
    assert weighted_length("pagos con tarjeta") == 17  # accented Latin weighs 1
    assert weighted_length("決済") == 4  # CJK weighs 2
    assert weighted_length("🙏🏽") == 2  # an emoji with its modifier is one emoji
    assert weighted_length("👨\u200d👩\u200d👧") == 2  # so is a ZWJ family
    assert weighted_length("see " + LINK + "x" * 300) == 4 + 23  # any URL counts 23


def test_a_text_that_fits_is_left_alone():
    text = f"Card payments failing\n\nWe are investigating.\n\n{LINK}"
    assert split(text, LINK, thread=False).parts == [text]


def test_spanish_is_cut_at_a_word_with_the_link_whole_and_last():
    body = "Algunos pagos con tarjeta fallan al pagar en la tienda en línea. " * 10
    result = split(f"Fallan los pagos\n\n{body}\n\n{LINK}", LINK, thread=False)
    (post,) = result.parts
    assert result.shortened and weighted_length(post) <= 280
    assert post.endswith(f"{ELLIPSIS}\n\n{LINK}")
    kept = post.split(ELLIPSIS)[0]
    assert (f"Fallan los pagos\n\n{body}").startswith(kept)
    assert (f"Fallan los pagos\n\n{body}")[len(kept)] == " "


def test_japanese_threads_at_sentence_ends_and_loses_nothing():
    body = "一部のカード決済が失敗しています。原因を調査しています。" * 12
    result = split(f"{body}\n\n{LINK}", LINK, thread=True)
    assert len(result.parts) >= 3
    assert LINK in result.parts[0] and all(LINK not in p for p in result.parts[1:])
    for part in result.parts:
        assert weighted_length(part) <= 280
    for part in result.parts[:-1]:
        assert part.replace(f"\n\n{LINK}", "").endswith("。" + ELLIPSIS)
    text = "".join(p.replace(f"\n\n{LINK}", "").replace(ELLIPSIS, "") for p in result.parts)
    assert text == body


@pytest.mark.parametrize("unit", [
    "👨\u200d👩\u200d👧", "🙏🏽", "❤️", "🇪🇸", "1️⃣",
    "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # England: a tag sequence
    "e\u0301",  # e and a combining accent
])
def test_emoji_sequences_are_never_split(unit: str):
    result = split(unit * 200 + " " + LINK, LINK, thread=True)
    for part in result.parts:
        assert weighted_length(part) <= 280
        content = part.replace(" " + LINK, "").removesuffix(ELLIPSIS)
        assert content == unit * (len(content) // len(unit)), f"a {unit!r} was split"
    assert sum(p.count(unit) for p in result.parts) == 200


def test_text_after_the_link_stays_with_it():
    body = "word " * 100
    (post,) = split(f"{body}{LINK} #status", LINK, thread=False).parts
    assert post.endswith(f"{ELLIPSIS} {LINK} #status") and weighted_length(post) <= 280
