"""`broadcaster --help` must stay fast: no SDK, HTTP, validation or template library on that path."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import STATE

HEAVY = ("pydantic", "jinja2", "tenacity", "babel", "markdown_it", "requests", "tweepy",
         "facebook", "rich", "sqlite3", "http.server", "uvicorn", "werkzeug",
         "twitter_text", "fastapi", "starlette", "aiosmtpd", "email_validator")


def test_help_imports_nothing_heavy():
    """The root's help, and the help of every command and subcommand (issue 16: each `--help`
    within 0.6 of `apprise --help`): one process runs them all, then says what they imported."""
    code = (
        "import sys\n"
        "from broadcaster.cli import command_names, main\n"
        "helps = [['--help'], *([*words, '--help'] for words in command_names())]\n"
        "for argv in helps:\n"
        "    sys.argv = ['broadcaster', *argv]\n"
        "    try:\n        main()\n    except SystemExit as done:\n"
        "        assert done.code in (0, None), argv\n"
        f"print(len(helps), sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    count, imported = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 25 and imported == "[]"


#: What only sending needs: `list` and `show` read the ledger and print, and must not pay for it
#: (validating the whole settings file with pydantic, or finding the channels, costs more than
#: the command: settings_file.py reads what they use; request.py checks what a command sends).
SENDING = ("jinja2", "markdown_it", "tenacity", "tweepy", "facebook", "fastapi", "uvicorn", "feedgen",
           "pydantic", "babel", "importlib.metadata", "broadcaster.settings", "broadcaster.registry",
           "broadcaster.pipeline", "broadcaster.render", "broadcaster.dispatch", "broadcaster.preflight",
           "broadcaster.request", "broadcaster.outcome", "dataclasses", "bisect")
#: What psycopg, the shared ledger's driver, imports itself: those are the store's, not sending's.
STORE = ("importlib.metadata", "dataclasses", "bisect")


def imported_by(args: list[str], config: str) -> list[str]:
    """Which of SENDING the command imported. The model and the reading results are
    NamedTuples and plain classes, so not even `dataclasses` is imported (a frozen dataclass
    costs half a millisecond to define; see model.py)."""
    code = (
        f"import sys; sys.argv = ['broadcaster', '--config', {config!r}, *{args!r}]\n"
        "from broadcaster.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {SENDING!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    return [m for m in found if not (STATE == "postgresql" and m in STORE)]


def test_list_and_show_import_nothing_that_only_sending_needs(project):
    import json

    incident = project.announce()
    assert imported_by(["list"], str(project.config)) == []
    assert imported_by(["show", incident], str(project.config)) == []
    assert imported_by(["show", incident, "--json"], str(project.config)) == []
    draft = json.loads(project.cli("announce", "--title", "T", "--message", "M", "--draft", "--json").stdout)
    assert "broadcaster.render" in imported_by(["show", draft["incident_id"]], str(project.config)), \
        "a draft's preview renders every channel: that one does need the pipeline"


def test_every_public_name_resolves():
    """The API imports what only sending needs when a name asks for it (module `__getattr__`):
    each name it and the package list must still be there."""
    import broadcaster
    from broadcaster import api

    for module in (broadcaster, api):
        missing = [name for name in module.__all__ if getattr(module, name, None) is None]
        assert missing == [], f"{module.__name__} lists names it does not have: {missing}"


def test_a_command_is_built_alone_and_reads_the_same(tmp_path):
    """`main` builds only the command asked for (`cli.only`); its help, options and errors are
    those of the whole app, and anything else gets the whole app."""
    from typer.testing import CliRunner

    from broadcaster import cli

    runner = CliRunner()
    names = [c.name or c.callback.__name__ for c in cli.app.registered_commands]
    names += [g.name for g in cli.app.registered_groups]
    assert len(names) > 15
    for name in names:
        lean = cli.only(["--config", "x.toml", name, "--help"])
        assert lean is not cli.app
        assert len(lean.registered_commands) + len(lean.registered_groups) == 1
        alone = runner.invoke(lean, [name, "--help"], prog_name="broadcaster")
        whole = runner.invoke(cli.app, [name, "--help"], prog_name="broadcaster")
        assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), name
    assert cli.only(["--config=x.toml", "list"]).registered_commands[0].name == "list"
    # No command, or none by that name: every command, by name and help only, reads the same.
    for argv in ([], ["--help"], ["--config", "x.toml"], ["--config", "x.toml", "--help"], ["lst"],
                 ["--version"], ["subscribers-list"]):
        index = cli.only(argv)
        assert all(c.callback.__name__ == "listed" for c in index.registered_commands)
        alone = runner.invoke(index, argv, prog_name="broadcaster")
        whole = runner.invoke(cli.app, argv, prog_name="broadcaster")
        assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), argv
        assert "announce" in alone.output or "--help" not in argv
    missing = runner.invoke(cli.only(["announce"]), ["announce", "--title", "T", "--message", "M",
                                                    "--config-typo", "x"], prog_name="broadcaster")
    assert missing.exit_code == 2 and "--config-typo" in missing.output


def test_the_default_time_zone_needs_no_zone_database(tmp_path):
    """UTC, the default, is datetime's own: `list` does not load zoneinfo (2 ms at each start),
    and still says UTC."""
    config = tmp_path / "settings.toml"
    config.write_text('[organization]\nname = "Acme"\nlocales = ["en"]\n[site]\n'
                      'base_url = "https://status.example.com"\noutput_dir = "public"\n', encoding="utf-8")
    cli = [sys.executable, "-m", "broadcaster", "--config", str(config)]
    subprocess.run([*cli, "announce", "--title", "Slow", "--message", "Slow.", "--yes"],
                   capture_output=True, text=True, timeout=60, check=True)
    code = (f"import sys; sys.argv = ['broadcaster', '--config', {str(config)!r}, 'list']\n"
            "from broadcaster.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('zoneinfo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    *listing, loaded = done.stdout.strip().splitlines()
    assert loaded == "False" and "Slow" in "\n".join(listing) and " UTC" in "\n".join(listing)
