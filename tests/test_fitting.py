"""Fitting an update into posts: X's weighted length, and only the explanation is ever cut."""

from __future__ import annotations

import pytest

from broadcaster.channels.fitting import ELLIPSIS, EssentialsTooLong, fit, shortenable, unmarked
from broadcaster.channels.tweet_text import weighted_length

LINK = "https://status.example.com/incidents/k7m2p9x4qa/"


def x_fit(text: str, *, thread_long: bool = False, replies: bool = True, fields=None):
    return fit(text, limit=280, length=weighted_length, link=LINK, thread_long=thread_long,
               replies=replies, fields=fields or {})


def post(title: str, explanation: str, *essentials: str) -> str:
    return "\n\n".join([title, shortenable(explanation), *essentials, LINK])


def test_weights_follow_twitter_text():
    assert weighted_length("pagos con tarjeta") == 17  # accented Latin weighs 1
    assert weighted_length("決済") == 4  # CJK weighs 2
    assert weighted_length("🙏🏽") == 2  # an emoji with its modifier is one emoji
    assert weighted_length("👨\u200d👩\u200d👧") == 2  # so is a ZWJ family
    assert weighted_length("see " + LINK + "x" * 300) == 4 + 23  # any URL counts 23


def test_a_text_that_fits_is_left_alone_and_unmarked():
    text = post("Card payments failing", "We are investigating.")
    assert x_fit(text).parts == (unmarked(text),)


def test_spanish_explanation_is_cut_at_a_word_and_the_apology_kept_whole():
    body = "Algunos pagos con tarjeta fallan al pagar en la tienda en línea. " * 10
    apology = "Sentimos las molestias."
    result = x_fit(post("Fallan los pagos", body.strip(), apology))
    (first,) = result.parts
    assert result.shortened and weighted_length(first) <= 280
    assert first.endswith(f"{ELLIPSIS}\n\n{apology}\n\n{LINK}")
    kept = first.split("\n\n")[1].removesuffix(ELLIPSIS)
    assert body.startswith(kept) and body[len(kept)] == " ", "cut at a word boundary"


def test_japanese_threads_at_sentence_ends_and_loses_nothing():
    body = "一部のカード決済が失敗しています。原因を調査しています。" * 12
    result = x_fit(post("決済障害", body), thread_long=True)
    assert len(result.parts) >= 3
    assert LINK in result.parts[0]
    for part in result.parts:
        assert weighted_length(part) <= 280
    first_body = result.parts[0].split("\n\n")[1]
    assert first_body.endswith("。" + ELLIPSIS)
    text = first_body + "".join(result.parts[1:])
    assert text.replace(ELLIPSIS, "") == body


@pytest.mark.parametrize("unit", [
    "👨\u200d👩\u200d👧", "🙏🏽", "❤️", "🇪🇸", "1️⃣",
    "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # England: a tag sequence
    "e\u0301",  # e and a combining accent
])
def test_emoji_sequences_are_never_split(unit: str):
    result = x_fit(post("T", unit * 200), thread_long=True)
    pieces = [result.parts[0].split("\n\n")[1], *result.parts[1:]]
    for piece in pieces:
        content = piece.removesuffix(ELLIPSIS)
        assert content == unit * (len(content) // len(unit)), f"a {unit!r} was split"
    assert sum(p.count(unit) for p in pieces) == 200


def test_essentials_that_do_not_fit_one_post_follow_as_whole_replies():
    guidance = "Use mobile data meanwhile; landline calls still work. " * 3
    apology = "We are sorry for the hours without a connection. " * 2
    result = x_fit(post("Fibre outage", "Roadworks cut two trunk cables. " * 6, guidance.strip(),
                        apology.strip()))
    assert result.moved >= 1 and len(result.parts) >= 2
    assert LINK in result.parts[0] and result.parts[0].startswith("Fibre outage")
    whole = "\n\n".join(result.parts)
    assert guidance.strip() in whole and apology.strip() in whole
    # Each reply leaves room for the link, should X refuse it in the thread.
    assert all(weighted_length(p + "\n\n" + LINK) <= 280 for p in result.parts[1:])


def test_a_channel_without_replies_refuses_essentials_that_do_not_fit():
    guidance = "Use mobile data meanwhile. " * 8
    apology = "We are sorry. " * 10
    with pytest.raises(EssentialsTooLong, match="guidance and apology") as refused:
        x_fit(post("T", "x", guidance.strip(), apology.strip()), replies=False,
              fields={"guidance": guidance, "apology": apology})
    assert "shorten" in str(refused.value)


def test_one_essential_longer_than_a_post_is_refused_by_name():
    apology = "Lo sentimos muchísimo. " * 20
    with pytest.raises(EssentialsTooLong, match=r"the apology is .*/280"):
        x_fit(post("T", "x", apology.strip()), fields={"title": "T", "apology": apology.strip()})


def test_a_template_without_a_mark_is_never_shortened_but_refused():
    text = "\n\n".join(["Title", "word " * 80, LINK])
    with pytest.raises(EssentialsTooLong, match="template text"):
        x_fit(text)
    short = "\n\n".join(["Title", "word " * 40, "word " * 40, LINK])
    result = x_fit(short)  # whole paragraphs move to replies; nothing is cut
    assert not result.shortened and ELLIPSIS not in "".join(result.parts)
    assert "".join(result.parts).count("word") == 80
