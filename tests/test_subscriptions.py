"""Customers subscribe themselves from the status page: a real `serve` (uvicorn), real HTTP
requests, a real SMTP server (aiosmtpd) keeping the confirmation emails, the ledger read
back. The browser half (Chromium filling the form on the generated page) is in
test_browser.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import requests
from conftest import EMAIL_SECTION, Inbox, Project
from test_server import Server, start
from test_site import SITE

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
COMPONENTS = SITE + """
[subscriptions]
per_ip_per_hour = 6
emails_per_address_per_day = 2
"""


@pytest.fixture
def site(project: Project, inbox: Inbox) -> Iterator[tuple[Server, Inbox]]:
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1) + COMPONENTS)
    for server in start(project):
        yield server, inbox


def ask(server: Server, email: str, **fields: str | list[str]) -> requests.Response:
    data = {"email": email, "locale": "en", **fields}
    return requests.post(server.url + "/subscribe", data=data, timeout=30, allow_redirects=False)


def link_in(inbox: Inbox, email: str, n: int = -1) -> str:
    """The path of the confirmation link in the n-th email to `email`."""
    body = inbox.to(email)[n].get_content()
    url = re.search(r"https?://[^/\s]+(/subscribe/[A-Za-z0-9_-]+)", body)
    assert url, body
    return url.group(1)


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def press(server: Server, path: str, page: str | None = None, **extra: str) -> requests.Response:
    """The button on a page we served (its CSRF key), as a browser sends it."""
    page = page if page is not None else requests.get(server.url + path, timeout=30).text
    return requests.post(server.url + path, data={"csrf": csrf(page), **extra}, timeout=30)


def people(project: Project) -> list[dict]:
    return json.loads(project.cli("subscribers", "list", "--json").stdout)


def test_the_double_opt_in_path_from_form_to_first_incident_email(site, project: Project):
    server, inbox = site
    answer = ask(server, "Ana@Example.com", locale="es", component=["Checkout"], region="Madrid",
                 postcode="28004")
    assert answer.status_code == 200 and "Revise su correo" in answer.text
    assert "ana@example.com" in answer.text
    (mail,) = inbox.to("ana@example.com")
    assert mail["Subject"] == "Confirme su suscripción a los avisos de estado de Example Corp"
    assert mail["Auto-Submitted"] == "auto-generated"
    path = link_in(inbox, "ana@example.com")
    assert [p["state"] for p in people(project)] == ["pending"], "not subscribed before confirming"

    page = requests.get(server.url + path, timeout=30)
    assert page.status_code == 200 and "Confirmar mi suscripción" in page.text
    assert "Checkout, Madrid, 28004" in page.text
    assert [p["state"] for p in people(project)] == ["pending"], "a GET (a mail scanner) changes nothing"

    done = press(server, path, page.text)
    assert done.status_code == 200 and "Está suscrito" in done.text
    (ana,) = people(project)
    assert (ana["state"], ana["locale"], ana["components"], ana["regions"], ana["postcodes"]) == (
        "active", "es", ["Checkout"], ["Madrid"], ["28004"])
    exported = json.loads(project.cli("subscribers", "export", "ana@example.com", "--json").stdout)
    consent = json.loads(exported["subscribers"][0]["consent"])
    assert consent["source"] == "status page form" and consent["confirmed_at"] and consent["locale"] == "es"
    assert "Cada correo tiene un enlace" in consent["shown"], "what the form said, in her language"
    assert re.fullmatch(r"[0-9a-f]{32}", consent["ip_hash"]) and "127.0.0.1" not in json.dumps(exported)

    again = press(server, path, page.text)
    assert again.status_code == 200 and "Ya confirmada" in again.text, "a link used twice"

    inbox.messages.clear()
    project.announce("--component", "Checkout", "--region", "Madrid", "--title-es", "Fallan los pagos",
                     "--message-es", "Fallan los pagos con tarjeta.")
    (first,) = inbox.to("ana@example.com")
    text = first.get_body(("plain",)).get_content()
    manage = re.search(r"Gestionar su suscripción:\s+https://status\.example\.com(/preferences/\S+)", text)
    assert manage, text
    assert "Gestionar su suscripción" in first.get_body(("html",)).get_content()

    prefs = requests.get(server.url + manage.group(1), timeout=30)
    assert prefs.status_code == 200 and "Su suscripción" in prefs.text
    assert 'value="Checkout" checked' in prefs.text
    saved = press(server, manage.group(1), prefs.text, locale="en", component="Payments API")
    assert saved.status_code == 200 and "Your choices are saved." in saved.text, saved.text
    (ana,) = people(project)
    assert (ana["locale"], ana["components"], ana["regions"], ana["postcodes"]) == (
        "en", ["Payments API"], [], [])
    prefs = requests.get(server.url + manage.group(1), timeout=30)
    wrong = press(server, manage.group(1), prefs.text, component="Nuclear Plant")
    assert wrong.status_code == 400 and "is not one this site offers" in wrong.text.replace("&#39;", "'")
    assert people(project)[0]["components"] == ["Payments API"], "a bad form changes nothing"
    leave = re.search(r'<form method="post" action="(/unsubscribe/[^"]+)"', prefs.text).group(1)
    requests.post(server.url + leave, data={"from": "page"}, timeout=30)
    left = requests.get(server.url + manage.group(1), timeout=30)
    assert "You are not subscribed" in left.text and 'name="csrf"' not in left.text
    assert press(server, manage.group(1), prefs.text, locale="es").status_code == 200
    assert people(project)[0]["state"] == "unsubscribed", "leaving is final until a new confirmed request"


def test_the_answer_is_the_same_whatever_the_address(site, project: Project):
    server, inbox = site
    assert project.cli("subscribers", "add", "old@example.com").exit_code == 0
    assert project.cli("subscribers", "add", "gone@example.com").exit_code == 0
    assert project.cli("subscribers", "remove", "gone@example.com").exit_code == 0
    answers = {email: ask(server, email)
               for email in ("new@example.com", "old@example.com", "gone@example.com")}
    pages = {e: a.text.replace(e, "EMAIL") for e, a in answers.items()}
    assert {a.status_code for a in answers.values()} == {200} and len(set(pages.values())) == 1
    assert sorted(m.envelope_to[0] for m in inbox.messages) == [
        "gone@example.com", "new@example.com", "old@example.com"]
    states = {p["email"]: p["state"] for p in people(project) if p["state"] != "pending"}
    assert states == {"old@example.com": "active", "gone@example.com": "unsubscribed"}, "nothing changes yet"
    press(server, link_in(inbox, "gone@example.com"))
    assert {p["email"]: p["state"] for p in people(project) if p["state"] != "pending"}[
        "gone@example.com"] == "active", "an address that left comes back only through the double opt-in"


def test_expired_forged_and_malformed_links(site, project: Project):
    server, inbox = site
    ask(server, "ana@example.com")
    path = link_in(inbox, "ana@example.com")
    page = requests.get(server.url + path, timeout=30).text
    forged = requests.get(server.url + "/subscribe/" + "A" * 43, timeout=30)
    weird = requests.get(server.url + "/subscribe/..%2f..%2fetc", timeout=30)
    assert forged.status_code == 404 and weird.status_code == 404 and "Link not valid" in forged.text
    assert requests.post(server.url + "/subscribe/" + "A" * 43, data={"csrf": csrf(page)},
                         timeout=30).status_code == 404
    project.execute("UPDATE subscription_requests SET expires_at = ?", [("2020-01-01T00:00:00+00:00",)])
    expired = requests.get(server.url + path, timeout=30)
    assert expired.status_code == 200 and "This link has expired" in expired.text
    assert "48 hours" in expired.text
    assert press(server, path, page).status_code == 200
    assert [p["state"] for p in people(project)] == [], "expired: not pending, not subscribed"


def test_a_post_without_the_pages_csrf_key_confirms_nobody(site, project: Project):
    server, inbox = site
    ask(server, "ana@example.com")
    path = link_in(inbox, "ana@example.com")
    bare = requests.post(server.url + path, timeout=30)
    wrong = requests.post(server.url + path, data={"csrf": "1700000000.0123456789abcdef0123456789abcdef"},
                          timeout=30)
    page = requests.get(server.url + path, timeout=30).text
    cross = requests.post(server.url + path, data={"csrf": csrf(page)}, timeout=30,
                          headers={"Sec-Fetch-Site": "cross-site"})
    assert [bare.status_code, wrong.status_code, cross.status_code] == [403, 403, 403]
    assert "submit it once more" in bare.text and 'name="csrf"' in bare.text, "the button again, fresh"
    assert [p["state"] for p in people(project)] == ["pending"]


def test_rate_limits_answer_429_with_retry_after_and_send_no_more_email(site, project: Project):
    server, inbox = site
    answers = [ask(server, "ana@example.com") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    assert len(inbox.to("ana@example.com")) == 2, "at most emails_per_address_per_day, however many ask"
    wait = int(answers[2].headers["Retry-After"])
    assert 3600 < wait <= 86_400 and "Too many requests" in answers[2].text
    more = [ask(server, f"p{i}@example.com") for i in range(3)]
    assert [a.status_code for a in more] == [200, 200, 429], "6 form posts an hour from one IP"
    assert 0 < int(more[2].headers["Retry-After"]) <= 3600


def test_bad_forms_say_what_is_wrong_and_record_nothing(site, project: Project):
    server, inbox = site
    cases = {
        "not-an-address": ("not-an-address", {}),
        "not one this site offers": ("ana@example.com", {"component": "Nuclear Plant"}),
        "not one of [organization] locales": ("ana@example.com", {"locale": "fr"}),
        "is not a postcode": ("ana@example.com", {"postcode": "<script>"}),
        "the email address is empty": ("", {}),
    }
    for says, (email, fields) in cases.items():
        answer = ask(server, email, **fields)
        shown = answer.text.replace("&#39;", "'")
        assert answer.status_code == 400 and says in shown, (says, shown[-800:])
        assert "<details open>" in answer.text, "the form again, open"
    huge = requests.post(server.url + "/subscribe", data="email=" + "a" * 20_000, headers=FORM, timeout=30)
    json_body = requests.post(server.url + "/subscribe", json={"email": "ana@example.com"}, timeout=30)
    assert huge.status_code == 413 and json_body.status_code == 400
    assert inbox.messages == [] and people(project) == []


def test_a_filled_honeypot_is_answered_like_anyone_and_nothing_happens(site, project: Project):
    server, inbox = site
    answer = ask(server, "bot@example.com", website="http://spam.example")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert inbox.messages == [] and people(project) == []


def test_export_and_erase_a_person(site, project: Project):
    server, inbox = site
    ask(server, "ana@example.com")
    press(server, link_in(inbox, "ana@example.com"))
    project.announce()
    assert "ana@example.com" in json.dumps(json.loads(
        project.cli("subscribers", "export", "ana@example.com", "--json").stdout)["deliveries"])
    refused = project.cli("subscribers", "erase", "ana@example.com")
    assert refused.exit_code == 2 and "pass --yes" in refused.output
    erased = project.cli("subscribers", "erase", "ana@example.com", "--yes")
    assert erased.exit_code == 0 and "Erased ana@example.com" in erased.stdout, erased.output
    assert project.rows("SELECT COUNT(*) FROM deliveries WHERE recipient LIKE 'erased-%'") == [(1,)]
    assert project.rows("SELECT COUNT(*) FROM subscribers") == [(0,)]
    assert project.rows("SELECT COUNT(*) FROM subscription_requests") == [(0,)]
    assert "ana@example.com" not in "".join(str(v) for v in project.files().values())
    for command in (("export",), ("erase", "--yes")):
        bad = project.cli("subscribers", command[0], "not-an-address", *command[1:])
        assert bad.exit_code == 2 and "not a valid email address" in bad.output, bad.output
    nothing = project.cli("subscribers", "export", "ana@example.com")
    assert nothing.exit_code == 0 and "Nothing is held about ana@example.com" in nothing.stdout


def test_list_counts_people_by_state(site, project: Project):
    server, inbox = site
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        ask(server, email)
    press(server, link_in(inbox, "a@example.com"))
    assert project.cli("subscribers", "add", "d@example.com").exit_code == 0
    assert project.cli("subscribers", "remove", "d@example.com").exit_code == 0
    listed = project.cli("subscribers", "list")
    assert listed.stdout.strip() == "1 active, 2 waiting to confirm, 1 unsubscribed."
    # --json: each of them, those on file by address and then those waiting, printed as read
    # from the ledger but the same text as one json.dumps of the whole list.
    each = project.cli("subscribers", "list", "--json").stdout
    assert [(p["email"], p["state"]) for p in json.loads(each)] == [
        ("a@example.com", "active"), ("d@example.com", "unsubscribed"),
        ("b@example.com", "pending"), ("c@example.com", "pending")]
    assert each == json.dumps(json.loads(each), indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("items", [[], [1], ["ñ", {"a": [1, {"b": None}], "c": "«»"}, []], [{}] * 3])
def test_a_json_array_printed_an_item_at_a_time_reads_as_one_dump(items: list):
    from broadcaster.report import json_array

    assert "\n".join(json_array(iter(items))) == json.dumps(items, indent=2, ensure_ascii=False)


# -- in a real browser: Chromium fills the form on the generated page ----------------------

PROBE = """<!doctype html><body><iframe id="f" src="{src}" width="{width}" height="{height}"></iframe>
<script>
var f = document.getElementById("f"), step = 0;
f.onload = function () {{
  var w = f.contentWindow, d = w.document;
  if (step++ === 0) {{ {first} }} else {{
    document.body.dataset.heading = d.querySelector("h1").textContent;
    document.body.dataset.path = w.location.pathname;
  }}
}};
</script></body>"""
FILL = """
  d.querySelector(".subscribe details").open = true;
  d.getElementById("sub-email").value = "ana@example.com";
  d.querySelector('input[name=component][value="Checkout"]').checked = true;
  d.querySelector('.subscribe form button').click();"""
OPEN_FORM = """
  d.querySelector(".subscribe details").open = true;
  d.getElementById("sub-email").value = "ana@example.com";
  d.getElementById("sub-email").scrollIntoView();"""


def probe(project: Project, name: str, src: str, first: str, *, width: int = 1024, height: int = 1400) -> str:
    (project.public / name).write_text(PROBE.format(src=src, first=first, width=width, height=height),
                                       encoding="utf-8")
    return name


@pytest.fixture
def browser_site(project: Project, inbox: Inbox) -> Iterator[tuple[Server, Inbox]]:
    """The status site and `serve` on one origin, as behind the README's reverse-proxy rule."""
    from test_server import free_port

    port = free_port()
    base = project.config.read_text().replace("https://status.example.com", f"http://127.0.0.1:{port}")
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1) + COMPONENTS, base=base)
    project.announce("--component", "Payments API", "--title-es", "Fallan los pagos",
                     "--message-es", "Fallan los pagos con tarjeta.")
    for server in start(project, port=port, static=True):
        yield server, inbox


def test_chromium_subscribes_from_the_spanish_page_and_confirms_with_the_button(browser_site, project,
                                                                                tmp_path):
    from test_browser import ARTIFACTS, CHROMIUM, browse

    if CHROMIUM is None and not __import__("os").environ.get("BROADCASTER_REQUIRE_TOOLS"):
        pytest.skip("Debian's chromium is not installed (scripts/system-packages chromium)")
    server, inbox = browser_site
    dom, console = browse(f"{server.url}/{probe(project, 'p1.html', '/es/', FILL)}", tmp_path / "b1")
    assert console == [], console
    assert 'data-heading="Revise su correo"' in dom and 'data-path="/subscribe"' in dom, dom[-600:]
    (mail,) = inbox.to("ana@example.com")
    assert "Confirme su suscripción" in mail["Subject"], "in the language the Spanish page preselected"
    path = link_in(inbox, "ana@example.com")

    scanner, _ = browse(server.url + path, tmp_path / "scanner")  # what a mail scanner does: GET
    assert "Confirmar mi suscripción" in scanner and [p["state"] for p in people(project)] == ["pending"]

    click = "d.querySelector('form button').click();"
    dom, console = browse(f"{server.url}/{probe(project, 'p2.html', path, click)}", tmp_path / "b2")
    assert console == [] and 'data-heading="Está suscrito"' in dom, dom[-600:]
    (ana,) = people(project)
    assert (ana["state"], ana["locale"], ana["components"]) == ("active", "es", ["Checkout"])

    # What people see, kept for a person to look at: the form, the confirmation page and the
    # preferences page, in both languages, on a desktop and on a 390 px phone.
    token = project.rows("SELECT token FROM subscribers")[0][0]
    for locale, home in (("en", "/"), ("es", "/es/")):
        assert ask(server, f"{locale}@example.com", locale=locale, component="Checkout").status_code == 200
        pages = {"form": "", "confirm": link_in(inbox, f"{locale}@example.com"),
                 "preferences": f"/preferences/{token}"}
        project.execute("UPDATE subscribers SET locale = ? WHERE token = ?", [(locale, token)])
        for width, (x, y) in (("desktop", (1024, 1400)), ("phone", (390, 1400))):
            form = probe(project, f"form-{locale}-{width}.html", home, OPEN_FORM, width=x, height=y)
            pages["form"] = "/" + form
            for what, where in pages.items():
                shot = ARTIFACTS / f"subscribe-{what}-{locale}-{width}.png"
                _, console = browse(server.url + where, tmp_path / f"{what}{locale}{width}", size=f"{x},{y}",
                                    screenshot=shot)
                assert console == [], (what, console)


def test_requests_at_once_for_one_address_send_no_more_than_the_limit(site, project: Project):
    from concurrent.futures import ThreadPoolExecutor

    server, inbox = site
    assert project.cli("state", "migrate").exit_code == 0  # the ledger exists, as once `serve` ran a while
    with ThreadPoolExecutor(5) as pool:
        codes = sorted(pool.map(lambda _: ask(server, "ana@example.com").status_code, range(5)))
    assert codes == [200, 200, 429, 429, 429]
    assert len(inbox.to("ana@example.com")) == 2


def test_schemathesis_finds_no_server_error_in_the_subscription_pages(site, tmp_path):
    import subprocess

    from conftest import BIN

    server, _ = site
    done = subprocess.run(
        [str(BIN / "schemathesis"), "run", server.url + "/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--generation-deterministic", "--no-color",
         "--include-path-regex", "^/(subscribe|preferences)"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_a_ledger_that_cannot_be_used_is_503_with_retry_after_and_nothing_sent(site, monkeypatch):
    from broadcaster import subscriptions
    from broadcaster.errors import LedgerBusyError

    server, inbox = site

    def busy(*args, **kwargs):
        raise LedgerBusyError("the ledger at state/ledger.db is busy: database is locked")

    monkeypatch.setattr(subscriptions, "open_ledger", busy)
    token = "A" * 43
    answers = [ask(server, "ana@example.com"), requests.get(f"{server.url}/subscribe/{token}", timeout=30),
               requests.post(f"{server.url}/subscribe/{token}", timeout=30),
               requests.get(f"{server.url}/preferences/{token}", timeout=30),
               requests.post(f"{server.url}/preferences/{token}", data={"locale": "en"}, timeout=30)]
    assert [a.status_code for a in answers] == [503] * 5
    assert all(a.headers["Retry-After"] == "60" and "Nothing was changed" in a.text for a in answers)
    assert inbox.messages == []
