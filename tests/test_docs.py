"""The README documents every command and setting; every command has help text."""

from __future__ import annotations

import re

import typer.main
from conftest import ROOT

from broadcaster import registry
from broadcaster.cli import app
from broadcaster.settings import Settings

README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands() -> dict[str, object]:
    return typer.main.get_command(app).commands


def test_every_command_has_help_and_a_readme_entry():
    for name, command in commands().items():
        assert command.help, f"{name} has no help text"
        assert f"broadcaster {name}" in README, f"README does not document `broadcaster {name}`"


def test_every_option_has_help_text():
    for name, command in commands().items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts} has no help text"


def test_every_setting_is_in_the_settings_reference():
    sections = {name: field.annotation for name, field in Settings.model_fields.items()}
    for section, model in sections.items():
        if section == "channels" or not hasattr(model, "model_fields"):
            continue
        for key in model.model_fields:
            assert re.search(rf"`{key}`", README), f"[{section}] {key} is not in the README"


def ours() -> dict:
    """This project's channels: a channel installed from another package documents itself."""
    return {name: channel for name, channel in registry.channels().items()
            if channel.__module__.startswith("broadcaster.channels.")}


def test_every_channel_setting_is_in_the_settings_reference():
    for name, channel in ours().items():
        for key in channel.spec.settings.model_fields:
            assert re.search(rf"`\[channels\.(NAME|{name})\]` `{key}`", README), (
                f"[channels.{name}] {key} is not in the README's settings reference"
            )


def test_the_quick_start_is_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make \w+$", quick, re.M) == ["make drill", "make test"]
