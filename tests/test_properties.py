"""Property-based bad input (hypothesis): whatever arrives, never a traceback, always a clear
refusal (exit 2, or a 4xx from the hooks) that says what is wrong, and nothing half-written."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import requests
from conftest import Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import SECRET, start

from broadcaster.hooks import sign

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
tricky = st.one_of(text, st.sampled_from(["", " ", "-", "--yes", "../../x", "\x00", "é" * 300, "{{x}}", "0"]))


def fresh() -> Project:
    project = Project(Path(tempfile.mkdtemp(prefix="broadcaster-prop-")))
    project.write()
    return project


def assert_clean_refusal(result, project: Project, before: dict) -> None:
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output and "unexpected error" not in result.output
    if result.exit_code == 2:
        assert result.output.strip().startswith(("error:", "Usage:")) or "error" in result.output.lower()
        assert project.files() == before, "a refused command changed nothing"


@FAST
@given(title=tricky, message=tricky, impact=tricky, component=tricky, next_update=tricky)
def test_any_announce_arguments(title, message, impact, component, next_update):
    project = fresh()
    result = project.cli("announce", "--title", title, "--message", message, "--impact", impact,
                         "--component", component, "--next-update", next_update, "--yes")
    assert_clean_refusal(result, project, {} if result.exit_code == 2 else project.files())


@FAST
@given(incident=tricky, status=tricky, message=tricky)
def test_any_update_arguments(incident, status, message):
    project = fresh()
    before = project.files()
    result = project.cli("update", incident, "--status", status, "--message", message, "--yes")
    assert result.exit_code == 2, result.output
    assert_clean_refusal(result, project, before)


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), text, st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=6,
)


@FAST
@given(section=st.sampled_from(["organization", "site", "state", "retry", "channels", "automation",
                                "components", "templates", "nonsense"]),
       key=st.sampled_from(["name", "locales", "base_url", "path", "attempts", "website", "timezone",
                            "staff", "publish_impacts", "dir", "x"]),
       value=toml_values)
def test_any_settings_value(section, key, value):
    from broadcaster.errors import SettingsError
    from broadcaster.settings import settings_from_dict

    raw: dict = {"organization": {"name": "Example Corp"}, "site": {"base_url": "https://s.example.com"}}
    raw[section] = {**raw.get(section, {}), key: value} if section != "components" else value
    try:
        settings_from_dict(raw, environ={})
    except SettingsError as exc:
        assert str(exc).startswith("settings:"), exc  # names the file (here: built in code) and key


@FAST
@given(raw=st.text(max_size=300))
def test_any_settings_file_text(raw):
    project = fresh()
    project.config.write_text(raw, encoding="utf-8")
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert str(project.config) in result.output or "settings" in result.output


@FAST
@given(body=st.text(max_size=400))
def test_any_message_file(body):
    project = fresh()
    path = project.root / "words.toml"
    path.write_text(body, encoding="utf-8")
    before = project.files()
    result = project.cli("announce", "--title", "T", "--message", "M", "--message-file", str(path), "--yes")
    assert_clean_refusal(result, project, before if result.exit_code == 2 else project.files())


@FAST
@given(rows=st.lists(st.lists(st.one_of(text, st.emails()), max_size=6), max_size=8))
def test_any_subscriber_csv(rows):
    import csv
    import io

    project = fresh()
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    (project.root / "s.csv").write_text(buffer.getvalue(), encoding="utf-8")
    result = project.cli("subscribers", "import", str(project.root / "s.csv"), "--json")
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.stdout.strip().startswith("{"):
        report = json.loads(result.stdout)
        assert all(":" in p for p in report["problems"]), "each bad row names its line"


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)


def test_any_signed_hook_body_is_answered_below_500(tmp_path):
    project = Project(tmp_path)
    project.write()
    serving = start(project)
    url = next(serving).url

    @FAST
    @given(path=st.sampled_from(["/hooks/alertmanager", "/hooks/grafana", "/hooks/generic"]),
           body=st.one_of(json_values, st.fixed_dictionaries(
               {"version": st.just("4"), "groupKey": text, "status": st.sampled_from(["firing", "x"]),
                "alerts": st.lists(st.dictionaries(text, json_values, max_size=3), max_size=3)})))
    def hook(path, body):
        raw = json.dumps(body).encode()
        stamp = str(int(time.time()))
        answer = requests.post(url + path, data=raw, timeout=30, headers={
            "X-Broadcaster-Timestamp": stamp, "X-Broadcaster-Signature": sign(SECRET, stamp, raw)})
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            assert answer.json()["error"], "a refusal says what is wrong"

    try:
        hook()
    finally:
        next(serving, None)  # stops the server
