"""`broadcaster --help` must stay fast: no SDK, HTTP, validation or template library on that path."""

from __future__ import annotations

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
