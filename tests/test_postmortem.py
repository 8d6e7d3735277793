"""Postmortems: drafted, reviewed, published on the statement page and as a reply in every
thread; corrected on the page alone; refused, with nothing written, when the input is wrong."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import EMAIL_SECTION, Inbox, Project, Social

POSTMORTEM = """## Summary

From 09:58 to 10:42 **card payments failed** for most customers: a certificate at our card
processor's gateway expired.

## What we are changing

1. Certificates renew automatically, a month ahead.
2. An alert fires 30 days before any certificate expires.
"""
POSTMORTEM_ES = """## Resumen

De 09:58 a 10:42 **fallaron los pagos con tarjeta**: caducó un certificado en la pasarela.

## Qué vamos a cambiar

1. Los certificados se renuevan solos, con un mes de margen.
"""


def files(folder: Path, **texts: str) -> dict[str, Path]:
    """Write each text to NAME.md in `folder`."""
    out = {}
    for name, text in texts.items():
        out[name] = folder / f"{name}.md"
        out[name].write_text(text, encoding="utf-8")
    return out


def resolved(social: Social) -> str:
    """An incident announced and resolved on X and Facebook; its id."""
    incident = social.run("announce", "--title", "Card payments failing", "--message",
                          "Some card payments fail.")["incident_id"]
    done = social.run("resolve", incident, "--message", "Payments work again.")
    assert done["exit_code"] == 0, done
    return incident


def statement(project: Project, incident: str, locale: str = "") -> str:
    return (project.public / locale / "incidents" / incident / "index.html").read_text(encoding="utf-8")


def incident_json(project: Project, incident: str) -> dict:
    data = json.loads((project.public / "api" / "v2" / "incidents.json").read_text(encoding="utf-8"))
    return next(i for i in data["incidents"] if i["id"] == incident)


def test_a_postmortem_is_reviewed_as_a_draft_then_replies_in_every_thread(social: Social, inbox: Inbox,
                                                                          tmp_path: Path):
    social.configure(top=EMAIL_SECTION.format(port=inbox.port, connections=1))
    assert social.project.cli("subscribers", "add", "ana@example.com", "--locale", "es").exit_code == 0
    incident = resolved(social)
    before = incident_json(social.project, incident)
    pm = files(tmp_path, en=POSTMORTEM, es=POSTMORTEM_ES)

    draft = social.run("postmortem", incident, "--file", str(pm["en"]), "--file-es", str(pm["es"]), "--draft")
    assert draft["exit_code"] == 0 and draft["draft"], draft
    assert len(social.x.posted()) == 2 and len(inbox.messages) == 2, "a draft sends nothing"
    assert 'id="postmortem"' not in statement(social.project, incident), "nor shows on the site"
    review = social.project.cli("show", incident)
    assert review.exit_code == 0 and "Postmortem: Card payments failing" in review.output, review.output

    published = social.run("publish", incident)
    assert published["exit_code"] == 0, published
    assert {d["channel"] for d in published["deliveries"]} == {"website", "twitter", "facebook", "email"}
    # X: a reply to the resolution, its first paragraph and the link.
    resolution, reply = social.x.posted()[1:]
    assert reply.in_reply_to == resolution.id
    assert reply.text.startswith("Postmortem: Card payments failing\n\nFrom 09:58 to 10:42 card payments")
    assert reply.text.endswith(published["statement_url"])
    # Facebook: one more comment on the incident's post.
    (post,) = social.graph.feed()
    assert len(post.comments) == 2 and post.comments[-1].message.startswith("Postmortem: ")
    # Email: in the incident's thread, in the subscriber's language, the whole postmortem.
    mail = inbox.to("ana@example.com")[-1]
    assert mail["Subject"].startswith("Análisis del incidente") and mail["In-Reply-To"]
    body = mail.get_body(("plain",)).get_content()
    assert "Qué vamos a cambiar" in body and "1. Los certificados se renuevan solos" in body
    # The statement page: its own section, headings under the page's, in each language.
    page = statement(social.project, incident)
    assert '<section class="postmortem" id="postmortem"' in page and "<h3>What we are changing</h3>" in page
    assert "<h3>Qué vamos a cambiar</h3>" in statement(social.project, incident, "es")
    # The JSON: the postmortem under Statuspage's names; what the incident was has not moved.
    after = incident_json(social.project, incident)
    assert after["postmortem_body"] == POSTMORTEM.strip()
    assert after["postmortem_published_at"] == after["postmortem_body_last_updated_at"]
    assert after["resolved_at"] == before["resolved_at"] and after["status"] == "resolved"
    assert after["incident_updates"] == before["incident_updates"], "not an update of the timeline"


def test_a_revision_corrects_the_page_and_tells_nobody_again(social: Social, tmp_path: Path):
    incident = resolved(social)
    pm = files(tmp_path, first=POSTMORTEM, fixed=POSTMORTEM.replace("10:42", "10:47"))
    assert social.run("postmortem", incident, "--file", str(pm["first"]))["exit_code"] == 0
    posts, comments = len(social.x.posted()), len(social.graph.feed()[0].comments)
    first = incident_json(social.project, incident)

    again = social.run("postmortem", incident, "--file", str(pm["fixed"]))
    assert again["exit_code"] == 2 and "--revise" in again["error"], "a second one is refused"
    assert re.search(r"already has a postmortem \(published \d{4}-\d\d-\d\d \d\d:\d\d CES?T\)",
                     again["error"]), again["error"]
    revised = social.run("postmortem", incident, "--file", str(pm["fixed"]), "--revise")
    assert revised["exit_code"] == 0, revised
    assert [d["channel"] for d in revised["deliveries"]] == ["website"]
    assert len(social.x.posted()) == posts and len(social.graph.feed()[0].comments) == comments
    page = statement(social.project, incident)
    # The sentence, not a bare time: the page's own timestamps may read 10:42 when the test runs then.
    assert "From 09:58 to 10:47" in page and "From 09:58 to 10:42" not in page and "revised" in page
    now = incident_json(social.project, incident)
    assert now["postmortem_published_at"] == first["postmortem_published_at"]
    assert now["postmortem_body_last_updated_at"] > first["postmortem_body_last_updated_at"]
    # The feed: one entry for the postmortem, updated by the revision, not a second one.
    feed = (social.project.public / "feed.atom").read_text(encoding="utf-8")
    entries = re.findall(r"<entry>(.*?)</entry>", feed, re.S)
    (entry,) = [e for e in entries if "#postmortem</id>" in e]
    assert "<title>Postmortem: Card payments failing</title>" in entry and "From 09:58 to 10:47" in entry
    published, updated = (re.search(f"<{tag}>(.*?)</{tag}>", entry).group(1)
                          for tag in ("published", "updated"))
    assert updated > published


def test_a_second_draft_replaces_the_first_and_a_postmortem_draft_does_not_expire(project: Project,
                                                                                     tmp_path: Path):
    from broadcaster.ledger import open_ledger
    from broadcaster.settings import load_settings
    from broadcaster.tick import tick

    incident = project.announce()
    assert project.cli("resolve", incident, "--message", "Fixed.", "--yes").exit_code == 0
    pm = files(tmp_path, one=POSTMORTEM, two=POSTMORTEM.replace("Summary", "In short"))
    for name in ("one", "two"):
        done = project.cli("postmortem", incident, "--file", str(pm[name]), "--draft", "--json")
        assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["revised"], "the second draft revised the first"
    # An alert's draft elsewhere, left as long: the tick discards it, and not the postmortem.
    other = project.announce("--draft")
    settings = load_settings(project.config)
    with open_ledger(settings) as ledger:
        report = tick(settings, ledger, now=datetime.now(UTC) + timedelta(days=30))
        assert report.expired == [f"{other}-1"]
        (waiting,) = ledger.incident(incident).drafts
    assert waiting.seq == 3 and waiting.texts["en"].message.startswith("## In short")
    assert project.cli("publish", incident, "--yes").exit_code == 0
    assert "<h3>In short</h3>" in statement(project, incident)


@pytest.mark.parametrize(("make", "args", "says"), [
    ("open", ["--file", "{pm}"], "is investigating: a postmortem comes after the resolution"),
    ("resolved", ["--file", "{folder}/missing.md"], "--file {folder}/missing.md: no such file"),
    ("resolved", ["--file", "{empty}"], "--file: the postmortem is empty"),
    ("resolved", ["--file", "{latin1}"], "not UTF-8 text (a bad byte at offset 5)"),
    ("resolved", ["--file", "{nul}"], "--file"),
    ("resolved", ["--file", "{big}"], "a postmortem is at most 256 KB"),
    ("resolved", ["--file", "{folder}"], "a folder, not a file"),
    ("resolved", ["--file", "{pm}", "--file-fr", "{pm}"], "--file-fr: 'fr' is not one of [organization]"),
    ("resolved", ["--file", "{pm}", "--file-es", "{empty}"], "--file-es: the postmortem is empty"),
    ("resolved", ["--file", "{pm}", "--file-es", "{pm}", "--file-es={pm}"], "--file-es given twice"),
    ("resolved", ["--file", "{pm}", "--fichier", "x"], "unknown option or extra argument: '--fichier'"),
    ("resolved", ["--file", "{pm}", "--revise"], "has no published postmortem to revise"),
    ("resolved", ["--file", "{pm}", "--revise", "--draft"], "--revise and --draft"),
    ("resolved", ["--file", "{pm}", "--revise", "--channel", "website"], "--channel does not apply"),
    ("maintenance", ["--file", "{pm}"], "is a maintenance: postmortems are for incidents"),
    ("draft-resolution", ["--file", "{pm}"], "has a resolve draft waiting"),
    ("draft-postmortem", ["--file", "{pm}"], "has a postmortem draft waiting: publish it"),
    ("bad-id", ["--file", "{pm}"], "is not an incident id"),
])
def test_bad_input_is_refused_naming_the_problem_and_nothing_is_written(
        project: Project, tmp_path: Path, make: str, args: list[str], says: str):
    folder = tmp_path / "input"
    folder.mkdir()
    made = files(folder, pm=POSTMORTEM, empty=" \n")
    paths = {"folder": str(folder), **{k: str(v) for k, v in made.items()}}
    (folder / "latin1.md").write_bytes("## Ca\xf1a".encode("latin-1"))
    (folder / "nul.md").write_text("## Summary\n\nA\x00B", encoding="utf-8")
    (folder / "big.md").write_text("x" * (257 * 1024), encoding="utf-8")
    paths.update(latin1=str(folder / "latin1.md"), nul=str(folder / "nul.md"), big=str(folder / "big.md"))
    if make == "maintenance":
        start = datetime.now(UTC) + timedelta(days=1)
        done = project.cli("maintenance", "schedule", "--title", "Upgrade", "--message", "Upgrade.",
                           "--starts", start.isoformat(), "--ends", (start + timedelta(hours=1)).isoformat(),
                           "--yes", "--json")
        incident = json.loads(done.stdout)["incident_id"]
    elif make == "bad-id":
        incident = "not-an-id"
    else:
        incident = project.announce()
        if make in ("resolved", "draft-resolution", "draft-postmortem"):
            resolve = ["--draft"] if make == "draft-resolution" else ["--yes"]
            assert project.cli("resolve", incident, "--message", "Fixed.", *resolve).exit_code == 0
        if make == "draft-postmortem":
            assert project.cli("postmortem", incident, "--file", paths["pm"], "--draft").exit_code == 0
    before = project.files()
    result = project.cli("postmortem", incident, *(a.format(**paths) for a in args), "--yes")
    assert result.exit_code == 2, result.output
    assert says.format(**paths) in result.output
    assert project.files() == before, "nothing written"


def test_a_dry_run_shows_every_post_and_writes_nothing(social: Social, tmp_path: Path):
    incident = resolved(social)
    pm = files(tmp_path, en=POSTMORTEM)
    before = social.project.files()
    shown = social.run("postmortem", incident, "--file", str(pm["en"]), "--dry-run")
    assert shown["exit_code"] == 0 and social.project.files() == before
    posts = {p["channel"]: p["text"] for p in shown["preview"] if p["locale"] == "en"}
    assert posts["twitter"].startswith("Postmortem: Card payments failing\n\nFrom 09:58")
    assert "What we are changing" in posts["website"]
    assert any("no 'es' text given" in w for w in shown["warnings"]), "readers in Spanish get English"
