"""Bad input: exit 2, a message that says what is wrong and where, nothing sent or written."""

from __future__ import annotations

import json

import pytest


def _refused(project, result, *needles: str, before: dict | None = None) -> None:
    assert result.exit_code == 2, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert project.files() == (before or {}), "something was written"


def test_unknown_impact_is_refused(project):
    result = project.cli("announce", "--title", "T", "--message", "M", "--impact", "huge", "--yes")
    _refused(project, result, "--impact", "'huge' is not one of")


def test_missing_title_is_refused(project):
    result = project.cli("announce", "--message", "M", "--yes")
    _refused(project, result, "title: required")


def test_missing_message_is_refused(project):
    result = project.cli("announce", "--title", "T", "--yes")
    _refused(project, result, "message: required")


def test_unknown_incident_id_is_refused_and_changes_nothing(project):
    project.announce()
    before = project.files()
    result = project.cli("update", "zzzzzzzzzz", "--status", "identified", "--message", "M", "--yes")
    _refused(project, result, "no incident 'zzzzzzzzzz'", before=before)


@pytest.mark.parametrize("command", [("resolve", "--message", "M", "--yes"), ("publish", "--yes"),
                                     ("retry",), ("show",)])
@pytest.mark.parametrize("bad_id", ["../../escape", "ABC", "x" * 300, "2026-01-01"])
def test_malformed_incident_ids_never_reach_a_path(project, bad_id, command):
    result = project.cli(command[0], bad_id, *command[1:])
    _refused(project, result, "is not an incident id")
    assert not list(project.root.parent.glob("escape*")), "a file was written outside the project"


def test_the_incident_lock_refuses_anything_but_an_incident_id(tmp_path):
    from broadcaster.errors import UnknownIncidentError
    from broadcaster.ledger.sqlite import SQLiteLedger

    ledger = SQLiteLedger(tmp_path / "state.db")
    with pytest.raises(UnknownIncidentError), ledger.incident_lock("../../escape"):
        pass
    assert not (tmp_path / "locks").exists() and not list(tmp_path.parent.glob("escape*"))


def test_publishing_an_incident_without_drafts_is_refused(project):
    incident = project.announce()
    before = project.files()
    _refused(project, project.cli("publish", incident, "--yes"), "has no drafts", before=before)


def test_broken_settings_file_is_refused_naming_its_line(project):
    project.config.write_text('[organization]\nname = "x\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    _refused(project, result, str(project.config), "line 2")


def test_wrong_value_type_in_settings_is_refused(project):
    project.write('[channels.website]\nenabled = "yes please"\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    _refused(project, result, "channels.website.enabled", "valid boolean")


def test_missing_credential_for_an_enabled_channel_is_refused(project, channel_factory):
    script = channel_factory("chirp", secrets={"token": "BROADCASTER_CHIRP_TOKEN"})
    project.write("[channels.chirp]\nenabled = true\n")
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    _refused(project, result, "chirp: BROADCASTER_CHIRP_TOKEN is not set")
    assert script.received == []


def test_unknown_option_is_refused(project):
    result = project.cli("announce", "--title", "T", "--message", "M", "--mesage-es", "x", "--yes")
    _refused(project, result, "--mesage-es")


def test_text_for_a_locale_not_configured_is_refused(project):
    result = project.cli("announce", "--title", "T", "--message", "M", "--message-fr", "Bonjour", "--yes")
    _refused(project, result, "'fr'", "not one of [organization] locales")


def test_unreadable_next_update_is_refused(project):
    result = project.cli("announce", "--title", "T", "--message", "M", "--next-update", "soonish", "--yes")
    _refused(project, result, "--next-update 'soonish'", "30m")


def test_bad_message_file_names_the_file_and_field(project, tmp_path_factory):
    bad = tmp_path_factory.mktemp("words") / "words.toml"
    bad.write_text('[es]\nmesage = "Hola"\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--message-file", str(bad), "--yes")
    _refused(project, result, "words.toml", "[es] mesage: unknown field")


def test_updating_a_resolved_incident_is_refused(project):
    incident = project.announce()
    assert project.cli("resolve", incident, "--message", "Fixed.", "--yes").exit_code == 0
    before = project.files()
    result = project.cli("update", incident, "--status", "monitoring", "--message", "M", "--yes")
    _refused(project, result, "is resolved", before=before)


def test_without_a_terminal_or_yes_nothing_is_sent(project):
    result = project.cli("announce", "--title", "T", "--message", "M")
    _refused(project, result, "pass --yes")


def test_json_mode_reports_errors_as_json(project):
    result = project.cli("announce", "--message", "M", "--yes", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": "title: required and cannot be empty", "exit_code": 2}
