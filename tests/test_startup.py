"""`broadcaster --help` must stay fast: no SDK, HTTP, validation or template library on that path."""

from __future__ import annotations

import ast
import subprocess
import sys

HEAVY = ("pydantic", "jinja2", "tenacity", "babel", "markdown_it", "requests", "tweepy",
         "facebook", "rich", "sqlite3", "http.server", "uvicorn", "werkzeug",
         "twitter_text", "fastapi", "starlette", "aiosmtpd", "email_validator")


def test_help_imports_nothing_heavy():
    code = (
        "import sys; sys.argv = ['broadcaster', '--help']\n"
        "from broadcaster.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


#: What only sending needs: `list` and `show` read the ledger and print, and must not pay for it.
SENDING = ("jinja2", "markdown_it", "tenacity", "tweepy", "facebook", "fastapi", "uvicorn", "feedgen",
           "broadcaster.pipeline", "broadcaster.render", "broadcaster.dispatch", "broadcaster.preflight")


def imported_by(args: list[str], config: str) -> list[str]:
    code = (
        f"import sys; sys.argv = ['broadcaster', '--config', {config!r}, *{args!r}]\n"
        "from broadcaster.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {SENDING!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_list_and_show_import_nothing_that_only_sending_needs(project):
    import json

    incident = project.announce()
    assert imported_by(["list"], str(project.config)) == []
    assert imported_by(["show", incident], str(project.config)) == []
    assert imported_by(["show", incident, "--json"], str(project.config)) == []
    draft = json.loads(project.cli("announce", "--title", "T", "--message", "M", "--draft", "--json").stdout)
    assert "broadcaster.render" in imported_by(["show", draft["incident_id"]], str(project.config)), \
        "a draft's preview renders every channel: that one does need the pipeline"
