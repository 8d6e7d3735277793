"""Security: secrets never printed, templates cannot escape the sandbox, no XSS runs in a
real browser, and nothing a user types can traverse a path or be guessed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import BIN, Social
from test_browser import CHROMIUM, browse

from broadcaster.site.preview_server import SiteServer
from broadcaster.standins.server import Fault

SECRETS = {
    "BROADCASTER_TWITTER_CONSUMER_KEY": "ck-SECRET-1111111111",
    "BROADCASTER_TWITTER_CONSUMER_SECRET": "cs-SECRET-2222222222",
    "BROADCASTER_TWITTER_ACCESS_TOKEN": "at-SECRET-3333333333",
    "BROADCASTER_TWITTER_ACCESS_TOKEN_SECRET": "ats-SECRET-444444444",
    "BROADCASTER_FACEBOOK_PAGE_TOKEN": "EAAB-SECRET-55555555",
    "BROADCASTER_SMTP_USERNAME": "smtp-user-SECRET-666",
    "BROADCASTER_SMTP_PASSWORD": "smtp-pass-SECRET-777",
    "BROADCASTER_HOOK_SECRET": "hook-SECRET-8888888888888",
}


def everything_written(root: Path) -> str:
    """Every byte under `root` (site, ledger, locks), as text to search."""
    chunks = []
    for path in root.rglob("*"):
        if path.is_file() and path.name != "settings.toml":
            chunks.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


def test_known_secret_values_appear_in_no_output_log_json_ledger_or_repr(social: Social, monkeypatch, caplog):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)  # wrong for the stand-ins: every platform refuses them
    social.graph.fail("create_post", Fault.dropped(), Fault.dropped(), Fault.dropped())
    cli = social.project.cli
    outputs = [
        cli("announce", "--title", "T", "--message", "M", "--dry-run").output,
        cli("announce", "--title", "T", "--message", "M", "--yes").output,
        cli("announce", "--title", "T2", "--message", "M2", "--yes", "--json").output,
        cli("list", "--json").output,
        cli("retry", "--json").output,
        cli("retry").output,
    ]
    incident = json.loads(cli("list", "--json").stdout)[0]["id"]
    outputs += [cli("show", incident).output, cli("show", incident, "--json").output]
    from broadcaster.settings import load_settings

    settings = load_settings(social.project.config)
    outputs += [repr(settings), str(settings), repr(dict(settings.secrets)), caplog.text]
    outputs.append(everything_written(social.project.root))
    assert "401" in "\n".join(outputs), "the wrong credentials were really used and refused"
    for value in SECRETS.values():
        for text in outputs:
            assert value not in text


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ self._TemplateReference__context }}",
    "{{ update.__class__ }}",
    "{% include '/etc/passwd' %}",
    "{% include '../../../../etc/passwd' %}",
    "{{ t.__class__.__base__.__subclasses__() }}",
    "{% set x = namespace() %}{{ x.__init__.__globals__ }}",
])
def test_user_templates_cannot_reach_python_files_or_the_environment(project, monkeypatch, escape: str):
    monkeypatch.setenv("BROADCASTER_HOOK_SECRET", SECRETS["BROADCASTER_HOOK_SECRET"])
    folder = project.root / "mine" / "website"
    folder.mkdir(parents=True)
    (folder / "announce.html").write_text(escape)
    project.write('[templates]\ndir = "mine"\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 2, result.output
    assert "root:x:0" not in result.output and "uid=" not in result.output
    assert SECRETS["BROADCASTER_HOOK_SECRET"] not in result.output
    assert not project.public.exists(), "nothing was published"


XSS = [
    "<script>console.log('XSS-RAN')</script>",
    "<img src=x onerror=\"console.log('XSS-RAN')\">",
    "\"><svg onload=console.log('XSS-RAN')>",
    "[click me](javascript:console.log('XSS-RAN'))",
    "</script><script>console.log('XSS-RAN')</script>",
    "<iframe srcdoc=\"<script>console.log('XSS-RAN')</script>\"></iframe>",
    "{{ 7*7 }}{% raw %}",
    "' onmouseover='console.log(\"XSS-RAN\")",
]


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("BROADCASTER_REQUIRE_TOOLS"),
                    reason="Debian's chromium is not installed (scripts/system-packages chromium)")
def test_an_xss_corpus_runs_no_script_on_any_page_feed_or_json(project, tmp_path):
    with SiteServer(project.public) as server:
        project.write(base=project.config.read_text().replace("https://status.example.com", server.url))
        payload = " ".join(XSS)
        incident = json.loads(project.cli(
            "announce", "--title", payload[:190], "--message", payload, "--guidance", payload,
            "--component", XSS[1], "--region", XSS[0], "--title-es", XSS[2], "--message-es", payload,
            "--yes", "--json").stdout)["incident_id"]
        project.cli("update", incident, "--status", "identified", "--message", payload, "--yes")
        pages = sorted(p.relative_to(project.public) for p in project.public.rglob("*.html"))
        assert len(pages) == 8
        for number, page in enumerate(pages):
            url = f"{server.url}/{page.as_posix().removesuffix('index.html')}"
            dom, console = browse(url + "#region=" + XSS[0], tmp_path / f"p{number}")
            assert not any("XSS-RAN" in line for line in console), (page, console)
            assert ">49<" not in dom and " 49 " not in dom, "template syntax in input is never evaluated"
            if "incidents/" in page.as_posix():
                assert "{{ 7*7 }}" in dom, "it is shown as the text it is"
        for data in project.public.rglob("*.json"):
            json.loads(data.read_text())  # valid JSON: the payload stays a string
        feed = (project.public / "feed.atom").read_text()
        assert "<script>" not in feed and "&lt;script&gt;" in feed


def test_ids_template_names_and_tokens_cannot_traverse_or_be_guessed(project):
    for bad in ("../../etc/passwd", "..%2F..%2Fetc", "abc/../../x", "a" * 200):
        result = project.cli("show", bad)
        assert result.exit_code == 2
    assert not list(project.root.rglob("passwd"))
    project.write('[organization]\nname = "X"\nlocales = ["en", "../../etc"]\n',
                  base='[site]\nbase_url = "https://status.example.com"\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 2 and "locale code" in result.output
    from broadcaster.model import new_incident_id

    ids = {new_incident_id() for _ in range(5000)}
    assert len(ids) == 5000 and all(re.fullmatch(r"[2-9a-z]{10}", i) for i in ids)


def test_subscriber_tokens_are_long_random_and_unique(project):
    (project.root / "s.csv").write_text("email\n" + "".join(f"u{n}@example.com\n" for n in range(300)),
                                        encoding="utf-8")
    project.write('[channels.email]\nenabled = false\nhost = "127.0.0.1"\n')
    assert project.cli("subscribers", "import", str(project.root / "s.csv")).exit_code == 0
    tokens = [r[0] for r in project.rows("SELECT token FROM subscribers")]
    assert len(set(tokens)) == 300
    assert all(len(t) == 32 and re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in tokens)  # 192 random bits


def test_the_hook_server_never_logs_tokens_or_the_secret(project, monkeypatch):
    import subprocess
    import time
    import urllib.request

    monkeypatch.setenv("BROADCASTER_HOOK_SECRET", SECRETS["BROADCASTER_HOOK_SECRET"])
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(BIN / "broadcaster"), "--config", str(project.config), "serve",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        token = "T0kenT0kenT0kenT0kenT0kenT0ken12"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for method in ("GET", "POST"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/unsubscribe/{token}", method=method)
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
    finally:
        server.terminate()
        log = server.communicate(timeout=10)[0]
    assert "/unsubscribe/…" in log
    assert token not in log and SECRETS["BROADCASTER_HOOK_SECRET"] not in log
