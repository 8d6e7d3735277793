"""Settings errors name the file, the key (and line) and what is wrong, and exit 2."""

from __future__ import annotations

import pytest

from broadcaster.errors import SettingsError
from broadcaster.settings import load_settings


def test_broken_toml_names_the_file_and_line(project):
    project.write('[channels.website\nenabled = true\n')
    with pytest.raises(SettingsError) as error:
        load_settings(project.config)
    message = str(error.value)
    assert str(project.config) in message
    line = project.config.read_text().splitlines().index("[channels.website") + 1
    assert f"line {line}" in message


def test_wrong_value_type_names_the_key_and_its_line(project):
    project.write(base=project.config.read_text().replace("attempts = 3", 'attempts = "three"'))
    with pytest.raises(SettingsError) as error:
        load_settings(project.config)
    message = str(error.value)
    line = project.config.read_text().splitlines().index('attempts = "three"') + 1
    assert f"{project.config}:{line}: retry.attempts" in message
    assert "valid integer" in message and "'three'" in message


def test_unknown_timezone_and_locale_say_what_is_expected(project):
    text = project.config.read_text()
    text = text.replace("Europe/Madrid", "Europe/Madird").replace('"es"]', '"xx-yy-zz"]')
    project.write(base=text)
    with pytest.raises(SettingsError) as error:
        load_settings(project.config)
    message = str(error.value)
    assert "organization.timezone: 'Europe/Madird' is not an IANA time zone" in message
    assert "organization.locales" in message


def test_a_misspelt_key_is_refused_rather_than_ignored(project):
    project.write("[channels.website]\nenabeld = true\n")
    with pytest.raises(SettingsError, match=r"channels\.website\.enabeld: unknown key"):
        load_settings(project.config)


def test_a_secret_in_the_file_is_refused_naming_its_variable(project, channel_factory):
    channel_factory("chirp", secrets={"token": "BROADCASTER_CHIRP_TOKEN"})
    project.write('[channels.chirp]\nenabled = true\ntoken = "s3cr3t-value"\n')
    with pytest.raises(SettingsError) as error:
        load_settings(project.config)
    assert "set BROADCASTER_CHIRP_TOKEN" in str(error.value)
    assert "s3cr3t-value" not in str(error.value)


def test_an_enabled_channel_that_is_not_installed_is_named(project):
    project.write("[channels.pigeon]\nenabled = true\n")
    with pytest.raises(SettingsError, match="no channel named 'pigeon' is installed"):
        load_settings(project.config)


def test_disabled_sections_of_channels_not_installed_are_harmless(project):
    project.write('[channels.pigeon]\nenabled = false\nloft = "roof"\n')
    assert load_settings(project.config).enabled_channels() == ["website"]


def test_the_website_cannot_be_disabled(project):
    project.write("[channels.website]\nenabled = false\n")
    with pytest.raises(SettingsError, match="cannot be disabled"):
        load_settings(project.config)


def test_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(SettingsError, match="--config PATH or set BROADCASTER_CONFIG"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.sqlite_only
def test_relative_paths_are_relative_to_the_settings_file(project, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    settings = load_settings(project.config)
    assert settings.site.output_dir == project.root / "public"
    assert settings.state.path == project.root / "state" / "ledger.db"


def test_paths_left_to_their_defaults_are_relative_to_the_settings_file_too(tmp_path, monkeypatch):
    """A monitoring hook or cron job runs `--config /etc/…/settings.toml` from another folder:
    with no [state] or output_dir given, it must record in the ledger `list` reads and write
    the site beside the file, not in whatever folder it was started from."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    config = home / "settings.toml"
    config.write_text('[organization]\nname = "Acme"\nlocales = ["en"]\n[site]\n'
                      'base_url = "https://status.example.com"\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(config)
    assert settings.state.path == home / ".broadcaster" / "state.db"
    assert settings.site.output_dir == home / "public"
    cli = [sys.executable, "-m", "broadcaster", "--config", str(config)]
    subprocess.run([*cli, "announce", "--title", "Slow logins", "--message", "Slow.", "--yes"],
                   capture_output=True, text=True, timeout=60, check=True)
    listed = subprocess.run([*cli, "list"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Slow logins" in listed
    assert (home / ".broadcaster" / "state.db").exists() and (home / "public" / "index.html").exists()
    assert list(elsewhere.iterdir()) == [], "nothing written where the command was started"


def test_secrets_come_from_the_environment_and_never_show_in_repr(project, channel_factory):
    channel_factory("chirp", secrets={"token": "BROADCASTER_CHIRP_TOKEN"})
    project.write("[channels.chirp]\nenabled = true\n")
    settings = load_settings(project.config, environ={"BROADCASTER_CHIRP_TOKEN": "s3cr3t-value"})
    assert settings.secrets["BROADCASTER_CHIRP_TOKEN"].get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) + str(settings) + repr(settings.secrets)


def test_the_shipped_example_settings_are_valid():
    from pathlib import Path

    settings = load_settings(Path(__file__).parent.parent / "settings.toml", environ={})
    assert settings.organization.locales == ["en", "es"]
    assert settings.enabled_channels() == ["website"]


@pytest.mark.parametrize("change, key, says", [
    (("Europe/Madrid", "Europe/Madird"), "organization.timezone", "is not an IANA time zone"),
    (('base_url = "https://status.example.com"', 'base_url = "status.example.com"'), "site.base_url",
     "is not an http(s) address"),
    (('base_url = "https://status.example.com"', "base_url = 42"), "site.base_url",
     "Input should be a valid string"),
    (('path = "state/ledger.db"', 'url = "postgresql://ops:hunter2@db.example.com/status"'), "state.url",
     "holds a password"),
    (('path = "state/ledger.db"', 'url = "mysql://db.example.com/status"'), "state.url",
     "must be postgresql://"),
])
def test_list_and_show_check_the_settings_they_read_as_every_command_does(project, change, key, says):
    """`list` and `show` read only the keys they use, without pydantic (settings_file.py), with
    the same checks and the same messages as the full settings; exit 2 and nothing opened."""
    import json

    from conftest import BASE_SETTINGS

    assert change[0] in BASE_SETTINGS
    project.write(base=BASE_SETTINGS.replace(change[0], change[1], 1))
    with pytest.raises(SettingsError) as full:
        load_settings(project.config)
    for args in (["list"], ["show", "abcdefghjk"]):
        result = project.cli(*args, "--json")
        assert result.exit_code == 2, result.output
        error = json.loads(result.stdout)["error"]
        assert f"{key}: " in error and says in error and str(project.config) in error
        line = next(m for m in str(full.value).splitlines() if key in m)
        assert line in error, "the same words as the full settings, where both say it"
    assert "hunter2" not in result.output


def test_list_reads_the_settings_file_it_is_pointed_at_and_nothing_more(project):
    """A key only a sending command uses, wrong, does not stop `list`; `announce` refuses it."""
    from conftest import BASE_SETTINGS

    project.write(base=BASE_SETTINGS.replace("attempts = 3", 'attempts = "three"'))
    assert project.cli("list").exit_code == 0
    assert project.cli("announce", "--title", "T", "--message", "M", "--yes").exit_code == 2
