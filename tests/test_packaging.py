"""A real `pip install .` (not editable) gives a working command that finds its templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_a_regular_install_works_from_any_folder(tmp_path: Path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("broadcaster-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "broadcaster/templates/website/statement.html" in names
    assert "broadcaster/templates/email/postmortem.html" in names
    assert "broadcaster/templates/strings.es.toml" in names
    for plugin in ("mastodon", "bluesky", "slack", "webhook"):  # templates shipped beside each module
        assert f"broadcaster/channels/{plugin}/templates/{plugin}/announce.txt" in names
        assert f"broadcaster/channels/{plugin}/templates/{plugin}/postmortem.txt" in names
    assert "broadcaster/channels/slack/templates/strings.es.toml" in names
    assert "broadcaster/channels/website.py" in names
    assert not any(n.startswith(("channels/", "templates/", "tests/")) for n in names)

    target = tmp_path / "site-packages"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    drill = subprocess.run(
        [sys.executable, "-c",
         "import broadcaster.render as r, sys; print(r.shipped_templates()); "
         "sys.argv = ['broadcaster', 'drill', '--json', '--output', 'out']; "
         "from broadcaster.cli import main; main()"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )
    assert drill.returncode == 0, drill.stderr
    first, _, rest = drill.stdout.partition("\n")
    assert first == str(target / "broadcaster" / "templates")
    result = json.loads(rest)
    assert [s["step"] for s in result["steps"]] == ["announce", "update", "resolve", "postmortem"]
