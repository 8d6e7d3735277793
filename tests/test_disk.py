"""A full disk or an unwritable output_dir while publishing: a clear error, the ledger still
right, nothing half-written, and `retry` finishes once it is fixed."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BASE_SETTINGS, Project


def states(project: Project) -> dict[str, str]:
    return dict(project.rows("SELECT channel, state FROM deliveries"))


def test_an_unwritable_output_dir_fails_clearly_and_retry_finishes(project: Project, channel_factory):
    script = channel_factory("chirp")
    project.write("[channels.chirp]\nenabled = true\n")
    project.public.parent.mkdir(parents=True, exist_ok=True)
    project.public.write_text("a file where the site folder should be")  # root ignores permissions
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes", "--json")
    assert result.exit_code == 3
    website = next(d for d in json.loads(result.stdout)["deliveries"] if d["channel"] == "website")
    assert website["status"] == "failed"
    assert "cannot write" in website["error"] and "retry" in website["error"]
    assert states(project) == {"website": "failed", "chirp": "pending"}, "nothing before the statement"
    assert script.received == []
    project.public.unlink()
    assert project.cli("retry").exit_code == 0
    assert states(project) == {"website": "sent", "chirp": "sent"}
    assert len(script.received) == 1


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, so a write can really run out of space (needs mount rights)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_fails_clearly_leaves_no_half_files_and_retry_finishes(project: Project, tiny_disk):
    project.write(base=BASE_SETTINGS.replace('output_dir = "public"', f'output_dir = "{tiny_disk}"'))
    filler = tiny_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    result = project.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                         "--yes", "--json")
    assert result.exit_code == 3, result.output
    website = json.loads(result.stdout)["deliveries"][0]
    assert website["status"] == "failed" and "No space left on device" in website["error"]
    leftovers = [p for p in tiny_disk.rglob("*") if p.is_file() and p != filler]
    assert all(p.stat().st_size > 0 and not p.name.endswith(".tmp") for p in leftovers), leftovers
    filler.unlink()
    assert project.cli("retry").exit_code == 0
    assert states(project) == {"website": "sent"}
    assert "Payments down" in (tiny_disk / "index.html").read_text()
