"""`broadcaster serve` over real HTTP: a uvicorn server on a free port, real requests."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from conftest import BIN, EMAIL_SECTION, Project
from pydantic import SecretStr

from broadcaster.hooks import sign
from broadcaster.settings import load_settings

SECRET = "test-hook-secret-0123456789abcdef"


@dataclass
class Server:
    url: str
    project: Project

    def post(self, path: str, body: bytes | dict, *, timestamp: int | None = None, secret: str = SECRET,
             signature: str | None = None) -> requests.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/json", "X-Broadcaster-Timestamp": stamp,
                   "X-Broadcaster-Signature": signature or sign(secret, stamp, raw)}
        return requests.post(self.url + path, data=raw, headers=headers, timeout=30)

    def drafts(self) -> list[dict]:
        return json.loads(self.project.cli("list", "--drafts", "--json").stdout)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(project: Project, *, port: int | None = None, static: bool = False) -> Iterator[Server]:
    """`serve` on loopback; with `static`, the status site's files too on the same origin (what
    the README's reverse-proxy rule gives a visitor)."""
    import uvicorn

    from broadcaster.server import create_app

    port = port or free_port()
    app = create_app(load_settings(project.config), SecretStr(SECRET))
    if static:
        from starlette.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=project.public, html=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield Server(f"http://127.0.0.1:{port}", project)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def server(project: Project) -> Iterator[Server]:
    yield from start(project)


def alertmanager(status: str = "firing", *, group: str = '{}:{alertname="PaymentsDown"}',
                 severity: str = "critical", summary: str = "Card payments failing") -> dict:
    return {
        "version": "4", "groupKey": group, "truncatedAlerts": 0, "status": status,
        "receiver": "broadcaster", "groupLabels": {"alertname": "PaymentsDown"},
        "commonLabels": {"alertname": "PaymentsDown", "severity": severity, "component": "payments-api"},
        "commonAnnotations": {"summary": summary, "description": "Checkout error rate above 20%."},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{"status": status, "labels": {"alertname": "PaymentsDown", "severity": severity,
                                                 "component": "payments-api", "region": "madrid"},
                    "annotations": {"summary": summary}, "startsAt": "2026-11-22T09:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "c6eadffa33fcdf37"}],
    }


# -- authentication and hostile requests --------------------------------------------------


def test_serve_refuses_to_start_without_a_secret(project: Project):
    done = subprocess.run([str(BIN / "broadcaster"), "--config", str(project.config), "serve"],
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "BROADCASTER_HOOK_SECRET is not set" in done.stderr


@pytest.mark.parametrize("case", ["no headers", "wrong secret", "stale", "future", "not a number",
                                  "tampered"])
def test_unsigned_or_badly_signed_requests_are_401_and_do_nothing(server: Server, case: str):
    body = json.dumps(alertmanager()).encode()
    now = int(time.time())
    if case == "no headers":
        answer = requests.post(server.url + "/hooks/alertmanager", data=body, timeout=30)
    elif case == "wrong secret":
        answer = server.post("/hooks/alertmanager", body, secret="another-secret-value-0000")
    elif case == "stale":
        answer = server.post("/hooks/alertmanager", body, timestamp=now - 301)
    elif case == "future":
        answer = server.post("/hooks/alertmanager", body, timestamp=now + 301)
    elif case == "not a number":
        answer = server.post("/hooks/alertmanager", body, signature=sign(SECRET, "soon", body))
    else:
        answer = server.post("/hooks/alertmanager", body, signature=sign(SECRET, str(now), body + b" "))
    assert answer.status_code == 401, answer.text
    assert "error" in answer.json()
    assert server.drafts() == []


def test_a_replayed_request_is_refused(server: Server):
    body = json.dumps(alertmanager()).encode()
    stamp = str(int(time.time()))
    headers = {"X-Broadcaster-Timestamp": stamp, "X-Broadcaster-Signature": sign(SECRET, stamp, body)}
    first = requests.post(server.url + "/hooks/alertmanager", data=body, headers=headers, timeout=30)
    again = requests.post(server.url + "/hooks/alertmanager", data=body, headers=headers, timeout=30)
    assert first.status_code == 200 and again.status_code == 409
    assert "already accepted" in again.json()["error"]


def test_a_body_over_one_mib_is_413(server: Server):
    answer = server.post("/hooks/generic", b"{" + b" " * (1 << 20) + b"}")
    assert answer.status_code == 413
    chunked = requests.post(server.url + "/hooks/generic", data=iter([b"x" * 65536] * 20), timeout=30)
    assert chunked.status_code == 413, "a chunked body without Content-Length is counted too"


@pytest.mark.parametrize(("body", "says"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "body"),
    ({"version": "4", "status": "firing", "alerts": []}, "groupKey"),
    ({**alertmanager(), "status": "burning"}, "status"),
    ({**alertmanager(), "alerts": []}, "alerts"),
])
def test_malformed_bodies_are_400_saying_what_is_wrong(server: Server, body, says: str):
    answer = server.post("/hooks/alertmanager", body)
    assert answer.status_code == 400 and says in answer.json()["error"]
    assert server.drafts() == []


def test_generic_bodies_are_validated_too(server: Server):
    answer = server.post("/hooks/generic", {"title": "T", "message": "M", "impact": "apocalyptic",
                                            "dedupe_key": "k"})
    assert answer.status_code == 400 and "impact" in answer.json()["error"]
    answer = server.post("/hooks/generic", {"title": "T", "message": "M", "dedupe_key": "k", "extra": 1})
    assert answer.status_code == 400 and "extra" in answer.json()["error"]


# -- what alerts do -----------------------------------------------------------------------


def test_a_firing_alert_makes_a_draft_that_nobody_sees_yet(server: Server):
    answer = server.post("/hooks/alertmanager", alertmanager())
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["action"] == "drafted" and result["draft"] is True
    (draft,) = server.drafts()
    assert draft["title"] == "Card payments failing" and draft["impact"] == "critical"
    assert draft["components"] == ["payments-api"] and draft["regions"] == ["madrid"]
    assert not (server.project.public / "incidents" / result["incident_id"]).exists()


def test_the_same_group_firing_again_revises_the_draft(server: Server):
    first = server.post("/hooks/alertmanager", alertmanager()).json()
    again = server.post("/hooks/alertmanager", alertmanager(summary="Card payments failing in Madrid",
                                                            severity="warning")).json()
    assert again["action"] == "draft_revised" and again["incident_id"] == first["incident_id"]
    (draft,) = server.drafts()
    assert draft["title"] == "Card payments failing in Madrid" and draft["impact"] == "minor"
    other = server.post("/hooks/alertmanager", alertmanager(group='{}:{alertname="SearchSlow"}')).json()
    assert other["incident_id"] != first["incident_id"] and len(server.drafts()) == 2


def test_draft_then_resolution_then_publish_goes_through_the_normal_pipeline(server: Server):
    incident = server.post("/hooks/alertmanager", alertmanager()).json()["incident_id"]
    resolved = server.post("/hooks/alertmanager", alertmanager("resolved")).json()
    assert resolved["action"] == "resolution_drafted" and resolved["incident_id"] == incident
    shown = server.project.cli("show", incident)
    assert "what `broadcaster publish` would send" in shown.output
    assert "without an apology" in shown.output, "a critical resolution needs one before publishing"
    refused = server.project.cli("publish", incident, "--yes")
    assert refused.exit_code == 2 and "apology" in refused.output
    revised = server.project.cli("resolve", incident, "--message", "Payments work again.", "--apology",
                                 "We are sorry.", "--draft", "--json")
    assert revised.exit_code == 0 and json.loads(revised.stdout)["revised"] is True
    published = server.project.cli("publish", incident, "--yes", "--json")
    assert published.exit_code == 0, published.output
    page = (server.project.public / "incidents" / incident / "index.html").read_text()
    assert "Card payments failing" in page and "resolved" in page.lower()
    assert server.drafts() == []


def test_grafana_bodies_work_and_severity_maps_to_impact(server: Server):
    body = {**alertmanager(severity="error"), "version": "1", "orgId": 1, "title": "[FIRING:1]",
            "state": "alerting", "message": "…"}
    result = server.post("/hooks/grafana", body).json()
    assert result["action"] == "drafted"
    assert server.drafts()[0]["impact"] == "major"


def test_generic_hook_dedupes_by_key(server: Server):
    body = {"title": "Login slow", "message": "Logins take 30 s.", "impact": "major", "dedupe_key": "login"}
    first = server.post("/hooks/generic", body).json()
    again = server.post("/hooks/generic", {**body, "message": "Logins take 60 s."}).json()
    assert again["incident_id"] == first["incident_id"] and again["action"] == "draft_revised"
    assert server.post("/hooks/generic", {**body, "status": "resolved"}).json()["action"] == \
        "resolution_drafted"


def test_the_generic_hook_maps_names_like_alertmanager_and_a_refusal_is_not_an_acceptance(project: Project):
    project.write('''
        [automation]
        components = { "payments-api" = "Payments API" }
        regions = { "mad" = "Madrid" }

        [[components]]
        name = "Payments API"

        [[regions]]
        name = "Madrid"
        postcodes = ["28"]
        ''')
    for server in start(project):
        body = {"title": "Payments down", "message": "Errors.", "dedupe_key": "pay",
                "components": ["payments-api"], "regions": ["mad"]}
        assert server.post("/hooks/generic", body).status_code == 200
        (draft,) = server.drafts()
        assert draft["components"] == ["Payments API"] and draft["regions"] == ["Madrid"]
        # An unknown name is bad input: 400, and the same signed request is refused the same way
        # again (not "409 already accepted": it never was).
        raw = json.dumps({**body, "dedupe_key": "other", "components": ["billing"]}).encode()
        stamp = str(int(time.time()))
        first = server.post("/hooks/generic", raw, timestamp=int(stamp))
        again = server.post("/hooks/generic", raw, timestamp=int(stamp))
        assert first.status_code == 400 and "billing" in first.json()["error"]
        assert again.status_code == 400, again.text
        assert len(server.drafts()) == 1


def test_a_discarded_false_alarm_firing_again_makes_a_new_draft(server: Server):
    first = server.post("/hooks/alertmanager", alertmanager()).json()
    assert server.project.cli("discard", first["incident_id"]).exit_code == 0
    again = server.post("/hooks/alertmanager", alertmanager(), timestamp=int(time.time()) + 1).json()
    assert again.get("action") == "drafted", again
    assert again["incident_id"] != first["incident_id"]


def test_settings_may_publish_chosen_impacts_at_once_to_chosen_channels(project: Project):
    project.write('\n[automation]\npublish_impacts = ["critical"]\npublish_channels = ["website"]\n')
    for server in start(project):
        critical = server.post("/hooks/alertmanager", alertmanager()).json()
        assert critical["action"] == "published" and critical["draft"] is False
        assert [d["channel"] for d in critical["deliveries"]] == ["website"]
        assert (project.public / "incidents" / critical["incident_id"] / "index.html").exists()
        minor = server.post("/hooks/alertmanager", alertmanager(group="g2", severity="warning")).json()
        assert minor["action"] == "drafted"


def test_drafts_need_no_platform_credentials_but_publishing_does(project: Project):
    project.write('[channels.twitter]\nenabled = true\napi_base = "http://127.0.0.1:9"\n')
    for server in start(project):
        incident = server.post("/hooks/alertmanager", alertmanager()).json()["incident_id"]
        refused = project.cli("publish", incident, "--yes")
        assert refused.exit_code == 2 and "BROADCASTER_TWITTER_CONSUMER_KEY is not set" in refused.output


# -- unsubscribe and health -----------------------------------------------------------------


def test_one_click_unsubscribe_stops_the_emails(project: Project, inbox):
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1))
    (project.root / "s.csv").write_text("email\nana@example.com\nbob@example.com\n", encoding="utf-8")
    assert project.cli("subscribers", "import", str(project.root / "s.csv")).exit_code == 0
    project.announce()
    link = inbox.to("ana@example.com")[0]["List-Unsubscribe"].split(",")[0].strip(" <>")
    path = link.removeprefix("https://status.example.com")
    for server in start(project):
        page = requests.get(server.url + path, timeout=30)
        assert page.status_code == 200 and 'method="post"' in page.text and "ana@example.com" in page.text
        done = requests.post(server.url + path, data="List-Unsubscribe=One-Click", allow_redirects=False,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
        assert done.status_code == 200 and "set-cookie" not in done.headers and "location" not in done.headers
        assert requests.post(server.url + path, timeout=30).status_code == 200, "idempotent"
        unknown = requests.post(server.url + "/unsubscribe/" + "A" * 32, timeout=30)
        weird = requests.get(server.url + "/unsubscribe/..%2f..%2fetc", timeout=30)
        assert unknown.status_code == 404 and weird.status_code == 404
        assert unknown.text == requests.get(server.url + "/unsubscribe/" + "B" * 32, timeout=30).text
    inbox.messages.clear()
    project.announce()
    assert [m.envelope_to for m in inbox.messages] == [["bob@example.com"]]


def test_healthz(server: Server):
    answer = requests.get(server.url + "/healthz", timeout=30)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_openapi_describes_every_route(server: Server):
    spec = requests.get(server.url + "/openapi.json", timeout=30).json()
    assert {"/hooks/alertmanager", "/hooks/grafana", "/hooks/generic", "/unsubscribe/{token}",
            "/healthz"} <= set(spec["paths"])
    body = spec["paths"]["/hooks/alertmanager"]["post"]["requestBody"]["content"]["application/json"]
    assert "groupKey" in body["schema"]["properties"]


def test_schemathesis_finds_no_server_error(server: Server, tmp_path):
    done = subprocess.run(
        [str(BIN / "schemathesis"), "run", server.url + "/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--generation-deterministic", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_alerts_about_published_or_unknown_incidents_change_nothing(server: Server):
    incident = server.post("/hooks/alertmanager", alertmanager()).json()["incident_id"]
    assert server.project.cli("publish", incident, "--yes").exit_code == 0
    again = server.post("/hooks/alertmanager", alertmanager(summary="Still failing")).json()
    assert again == {"action": "unchanged", "incident_id": incident,
                     "statement_url": f"https://status.example.com/incidents/{incident}/"}
    stray = server.post("/hooks/alertmanager", alertmanager("resolved", group="never-fired")).json()
    assert stray["action"] == "unchanged" and stray["incident_id"] is None


@pytest.mark.sqlite_only
def test_healthz_is_503_when_the_ledger_cannot_be_read(project: Project):
    for server in start(project):
        project.state.mkdir(parents=True, exist_ok=True)
        (project.state / "ledger.db").write_bytes(b"this is not a database" * 100)
        answer = requests.get(server.url + "/healthz", timeout=30)
        assert answer.status_code == 503 and answer.json() == {"status": "unavailable"}
