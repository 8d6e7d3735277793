"""The drill is the README's first command: it must pass on a machine with nothing set up."""

from __future__ import annotations

import json
import subprocess

from conftest import BIN


def test_the_drill_rehearses_a_whole_incident_and_serves_the_site(tmp_path):
    done = subprocess.run(
        [str(BIN / "broadcaster"), "drill", "--output", str(tmp_path / "drill")],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Status site served at http://127.0.0.1:" in out
    for step in ("announce", "update", "resolve"):
        assert f"── {step}" in out
    assert out.count("→ 200") == 3 and "Drill passed" in out
    assert (tmp_path / "drill" / "site" / "es" / "index.html").exists()


def test_the_drill_reports_json(tmp_path):
    done = subprocess.run(
        [str(BIN / "broadcaster"), "drill", "--json", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    data = json.loads(done.stdout)
    assert all(d["status"] == "sent" for s in data["steps"] for d in s["deliveries"])
    assert data["steps"][2]["statement_url"].startswith(data["site_url"])
