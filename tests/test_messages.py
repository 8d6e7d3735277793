"""What readers get: the essentials are never cut, guidance carries over, messages are checked,
drafts are reviewed into shape. Through the real pipeline and the X stand-in."""

from __future__ import annotations

import json
import re

from conftest import EMAIL_SECTION, Project, Social, status_of

from broadcaster.channels.tweet_text import weighted_length

# A real resolution from a telecom, long enough that X must shorten it.
EXPLANATION_ES = (
    "El corte de fibra en el centro de Madrid se debió a unas obras municipales en la calle "
    "Atocha que dañaron dos troncales. Nuestros técnicos empalmaron los cables durante la noche "
    "y el servicio se recuperó a las 6:40. Estamos revisando con el Ayuntamiento cómo se nos "
    "avisa de obras junto a nuestras canalizaciones para que no vuelva a ocurrir."
)
APOLOGY_ES = "Sentimos mucho las horas sin conexión y las molestias que os hemos causado."
EXPLANATION_EN = (
    "The fibre cut in central Madrid was caused by municipal roadworks on Calle Atocha that damaged "
    "two trunk cables. Our engineers spliced the cables overnight and service was back at 06:40. "
    "We are reviewing with the City Council how we are told about works near our ducts so that "
    "this does not happen again."
)
APOLOGY_EN = "We are very sorry for the hours without a connection and the trouble it caused you."
GUIDANCE = "Use mobile data meanwhile; calls on landlines still work."


def run(project: Project, *args: str) -> tuple[int, dict]:
    result = project.cli(*args, "--yes", "--json")
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def announce_on_x(social: Social, *extra: str) -> str:
    outcome = social.run("announce", "--title", "Corte de fibra en Madrid", "--message", "Sin servicio.",
                         "--impact", "major", "--guidance", GUIDANCE, "--next-update", "1h", *extra)
    assert outcome["exit_code"] == 0, outcome
    return outcome["incident_id"]


# -- 1. the essentials are never cut -----------------------------------------------------------


def test_a_long_resolution_keeps_its_apology_on_x_in_both_languages(social: Social):
    cases = (("es", EXPLANATION_ES, APOLOGY_ES), ("en", EXPLANATION_EN, APOLOGY_EN))
    for locale, explanation, apology in cases:
        social.configure(twitter=f'locale = "{locale}"')
        incident = announce_on_x(social, "--title-es", "Corte de fibra", "--message-es", "Sin servicio.")
        done = social.run("resolve", incident, "--message", EXPLANATION_EN, "--apology", APOLOGY_EN,
                          "--message-es", EXPLANATION_ES, "--apology-es", APOLOGY_ES)
        assert done["exit_code"] == 0, done
        post = social.x.posted()[-1]
        assert weighted_length(post.text) <= 280
        assert apology in post.text, f"the {locale} apology was cut: {post.text!r}"
        assert post.text.rstrip().endswith(done["statement_url"].replace("/incidents", f"/{locale}/incidents")
                                           if locale == "es" else done["statement_url"])
        kept = post.text.split("…")[0].split("\n\n", 1)[1]
        assert explanation.startswith(kept), "the explanation is what was shortened, at its end"
        assert "…" in post.text


def test_an_announcement_keeps_guidance_and_the_next_update_promise_on_x(social: Social):
    long_message = "Some customers in central Madrid have no fibre connection since 22:10. " * 5
    outcome = social.run("announce", "--title", "Fibre outage in Madrid", "--message", long_message,
                         "--guidance", GUIDANCE, "--next-update", "14:30", "--impact", "major")
    assert outcome["exit_code"] == 0, outcome
    (post,) = social.x.posted()
    assert GUIDANCE in post.text and "Next update by 14:30 CE" in post.text
    assert weighted_length(post.text) <= 280


def test_maintenance_keeps_its_window_on_x(social: Social):
    outcome = social.run("maintenance", "schedule", "--title", "Obras en la red de Barcelona",
                         "--message", "Cambiaremos equipos en varias centrales. " * 12,
                         "--starts", "2030-11-24T02:00", "--ends", "2030-11-24T05:00")
    assert outcome["exit_code"] == 0, outcome
    (post,) = social.x.posted()
    assert "When: Nov 24, 2030, 02:00–05:00 CET" in post.text, post.text
    assert post.text.startswith("Planned maintenance: Obras"), "not 'Planned maintenance (Scheduled)'"


def test_essentials_too_long_for_one_post_continue_as_replies_whole(social: Social):
    incident = announce_on_x(social)
    apology = "Pedimos disculpas a todos los clientes afectados por este corte tan largo. " * 2
    guidance = "Si sigue sin conexión, reinicie el router y, si no vuelve, llámenos al 1004. " * 2
    done = social.run("resolve", incident, "--message", EXPLANATION_ES, "--apology", apology.strip(),
                      "--guidance", guidance.strip())
    assert done["exit_code"] == 0, done
    thread = social.x.thread(social.x.posted()[0].id)
    resolution = thread[1:]
    assert len(resolution) >= 2, "the essentials did not fit one post, so they go on as replies"
    assert all(weighted_length(p.text) <= 280 for p in resolution)
    whole = "\n".join(p.text for p in resolution)
    assert apology.strip() in whole and guidance.strip() in whole, "an essential was cut"
    assert done["statement_url"] in resolution[0].text


def test_an_essential_longer_than_a_post_is_refused_naming_the_field(social: Social):
    incident = announce_on_x(social)
    before = social.project.files()
    result = social.project.cli("resolve", incident, "--message", "Arreglado.", "--apology",
                                "Lo sentimos muchísimo. " * 20, "--yes")
    assert result.exit_code == 2
    assert "twitter" in result.output and "apology" in result.output and "shorten" in result.output
    assert len(social.x.posted()) == 1 and social.project.files() == before, "nothing sent, nothing written"


# -- 2. guidance carries over --------------------------------------------------------------------


def test_guidance_carries_over_until_replaced_or_cleared(project: Project):
    incident = project.announce("--guidance", GUIDANCE, "--impact", "major", "--next-update", "1h")
    page = project.public / "incidents" / incident / "index.html"
    code, _ = run(project, "update", incident, "--status", "identified", "--message", "Roadworks cut it.")
    assert code == 0 and "Use mobile data meanwhile" in page.read_text()
    guidance_section = re.search(r'<section class="guidance".*?</section>', page.read_text(), re.S)
    assert guidance_section and page.read_text().index("guidance") < page.read_text().index("<dl>"), \
        "the current guidance comes before the details"
    run(project, "update", incident, "--status", "monitoring", "--message", "Spliced.", "--guidance",
        "Restart your router if it is still offline.")
    text = page.read_text()
    assert "Restart your router" in guidance_section_of(text)
    assert "mobile data" not in guidance_section_of(text)
    run(project, "update", incident, "--status", "monitoring", "--message", "Stable.", "--clear-guidance")
    assert '<section class="guidance"' not in page.read_text()


def guidance_section_of(html: str) -> str:
    found = re.search(r'<section class="guidance".*?</section>', html, re.S)
    return found.group(0) if found else ""


def test_clearing_and_giving_guidance_at_once_is_refused(project: Project):
    incident = project.announce()
    code, out = run(project, "update", incident, "--status", "identified", "--message", "x",
                    "--guidance", "y", "--clear-guidance")
    assert code == 2 and "--clear-guidance" in out["error"]


# -- 3. message checks ---------------------------------------------------------------------------


def test_a_critical_resolution_without_apology_is_refused_unless_deliberate(project: Project):
    incident = project.announce("--impact", "critical")
    before = project.files()
    code, out = run(project, "resolve", incident, "--message", "Fixed.")
    assert code == 2 and "apology" in out["error"] and "--no-apology" in out["error"]
    assert project.files() == before
    code, out = run(project, "resolve", incident, "--message", "Fixed.", "--no-apology")
    assert code == 0, out


def test_an_incident_that_was_major_once_still_needs_its_apology(project: Project):
    incident = project.announce("--impact", "major")
    run(project, "update", incident, "--status", "monitoring", "--message", "Better.", "--impact", "minor")
    code, out = run(project, "resolve", incident, "--message", "Fixed.")
    assert code == 2 and "major" in out["error"]


def test_warnings_for_missing_guidance_promise_and_translation(project: Project):
    code, out = run(project, "announce", "--title", "Payments down", "--message", "Card payments fail.",
                    "--impact", "major", "--guidance", "Pay by transfer.",
                    "--message-es", "Fallan los pagos.")
    assert code == 0
    warnings = "\n".join(out["warnings"])
    assert "--next-update" in warnings
    assert "no guidance in 'es'" in warnings and "--guidance-es" in warnings
    code, out = run(project, "announce", "--title", "Payments down", "--message", "Card payments fail.",
                    "--impact", "critical", "--next-update", "1h", "--dry-run")
    assert any("without --guidance" in w for w in out["warnings"])


def test_a_long_email_subject_is_warned_about(mailing: Project):
    mailing.cli("subscribers", "add", "ana@example.com")
    code, out = run(mailing, "announce", "--title", "Card payments failing for some customers in every shop "
                    "and the online store", "--message", "x", "--next-update", "1h", "--dry-run")
    assert code == 0
    assert any("email subject" in w and "phones" in w for w in out["warnings"]), out["warnings"]


def test_control_characters_in_a_message_are_bad_input(project: Project):
    code, out = run(project, "announce", "--title", "Pagos\x00", "--message", "x")
    assert code == 2 and "U+0000" in out["error"] and "--title" in out["error"]
    code, out = run(project, "announce", "--title", "T", "--message", "mark \ufdd0 here")
    assert code == 2 and "U+FDD0" in out["error"]


# -- 4. drafts are reviewable --------------------------------------------------------------------


def test_a_draft_is_revised_in_place_and_published_once(project: Project, inbox):
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1))
    project.cli("subscribers", "add", "ana@example.com")
    code, drafted = run(project, "announce", "--title", "PaymentsDown firing", "--message",
                        "error_rate{job='checkout'} > 0.2", "--draft")
    incident = drafted["incident_id"]
    code, revised = run(project, "update", incident, "--status", "identified", "--message",
                        "Card payments fail at checkout.", "--title", "Card payments failing", "--draft")
    assert code == 0 and revised["revised"] is True and revised["update_id"] == drafted["update_id"]
    shown = json.loads(project.cli("show", incident, "--json").stdout)
    assert len(shown["updates"]) == 1
    assert shown["updates"][0]["texts"]["en"]["message"] == "Card payments fail at checkout."
    code, published = run(project, "publish", incident)
    assert code == 0 and [p["label"] for p in published["published"]] == ["#1 announce · identified"]
    assert len(inbox.messages) == 1, "one email, not one per draft"
    assert "error_rate" not in inbox.messages[0].as_string()


def test_an_update_while_a_draft_waits_is_refused(project: Project):
    incident = project.announce()
    run(project, "update", incident, "--status", "identified", "--message", "Draft cause.", "--draft")
    code, out = run(project, "update", incident, "--status", "monitoring", "--message", "Live.")
    assert code == 2 and "draft waiting" in out["error"] and "discard" in out["error"]


def test_a_false_alarm_is_discarded_and_vanishes_from_lists_but_not_the_ledger(project: Project):
    _, drafted = run(project, "announce", "--title", "Flapping alert", "--message", "x", "--draft")
    incident = drafted["incident_id"]
    listed = project.cli("list")
    assert "DRAFT" in listed.stdout and "1 incident with a draft waiting for review" in listed.stdout
    discarded = project.cli("discard", incident, "--json")
    assert discarded.exit_code == 0 and json.loads(discarded.stdout)["discarded"] == [f"{incident}-1"]
    assert incident not in project.cli("list").stdout
    assert json.loads(project.cli("list", "--json").stdout) == []
    shown = project.cli("show", incident)
    assert shown.exit_code == 2 and "discarded" in shown.output
    assert project.rows("SELECT discarded_at IS NOT NULL FROM updates WHERE incident_id = ?",
                        (incident,)) == [(True,)], "kept for the record"
    assert project.cli("discard", incident).exit_code == 2


def test_discarding_a_follow_up_draft_keeps_the_published_incident(project: Project):
    incident = project.announce()
    run(project, "update", incident, "--status", "identified", "--message", "Maybe.", "--draft")
    assert "+ DRAFT" in project.cli("list").stdout
    assert project.cli("discard", incident).exit_code == 0
    listed = project.cli("list").stdout
    assert incident in listed and "DRAFT" not in listed
    assert "Maybe." not in (project.public / "incidents" / incident / "index.html").read_text()
    # The discarded draft keeps its number: the next update (and the resolution) come after it.
    assert run(project, "update", incident, "--status", "identified", "--message", "Found it.")[0] == 0
    assert run(project, "resolve", incident, "--message", "Fixed.")[0] == 0
    shown = json.loads(project.cli("show", incident, "--json").stdout)
    assert [u["id"] for u in shown["updates"]] == [f"{incident}-{n}" for n in (1, 3, 4)]


# -- 5. the dry run shows the statement ------------------------------------------------------------


def test_dry_run_shows_what_the_statement_will_say_in_every_locale(project: Project):
    result = project.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                         "--guidance", "Pay by transfer.", "--message-es", "Fallan los pagos.",
                         "--title-es", "Fallan los pagos", "--guidance-es", "Pague por transferencia.",
                         "--dry-run")
    assert result.exit_code == 0
    out = result.stdout
    assert "website: the statement says" in out
    assert out.index("[en] Payments down") < out.index("[es] Fallan los pagos") < out.index("files")
    assert "What you can do now: Pay by transfer." in out
    assert "Qué puede hacer ahora: Pague por transferencia." in out


# -- 6. platform guardrails ------------------------------------------------------------------------


def test_x_cost_is_estimated_in_the_preview(social: Social):
    result = social.project.cli("announce", "--title", "Pagos", "--message", "Fallan.", "--dry-run")
    assert "1 post, about $0.20" in result.stdout
    out = json.loads(social.project.cli("announce", "--title", "P", "--message", "F", "--dry-run",
                                        "--json").stdout)
    assert next(p for p in out["preview"] if p["channel"] == "twitter")["cost_usd"] == 0.2


def test_when_x_refuses_a_reply_the_update_goes_out_standalone_with_the_link(social: Social):
    incident = announce_on_x(social)
    social.x.refuse_replies = True
    outcome = social.run("update", incident, "--status", "identified", "--message", "Obras en Atocha.")
    twitter = status_of(outcome, "twitter")
    assert twitter["status"] == "sent" and "standalone" in twitter["note"]
    latest = social.x.posted()[-1]
    assert latest.in_reply_to is None and outcome["statement_url"] in latest.text
    shown = social.project.cli("show", incident)
    assert "standalone" in shown.stdout


def test_a_retired_or_ending_graph_version_is_caught_before_sending(social: Social):
    from datetime import date

    from broadcaster.channels.facebook import FacebookChannel
    from broadcaster.preflight import open_channel
    from broadcaster.settings import load_settings

    social.configure(facebook='graph_version = "v21.0"')
    channel = open_channel(load_settings(social.project.config), "facebook")
    assert isinstance(channel, FacebookChannel)
    assert channel.readiness(date(2026, 10, 1)) == ([], [])
    problems, warnings = channel.readiness(date(2026, 11, 23))
    assert not problems and "stops working on 2027-01-21 (59 days)" in warnings[0]
    problems, _ = channel.readiness(date(2027, 1, 21))
    assert "stopped working" in problems[0] and "v25.0" in problems[0]
    social.configure(facebook='graph_version = "v3.1"')
    result = social.project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 2 and "graph_version v3.1 stopped working" in result.output
    assert social.graph.feed() == [] and social.x.posted() == []
