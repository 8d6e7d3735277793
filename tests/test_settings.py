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
