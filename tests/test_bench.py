"""The email fan-out benchmark still runs end to end, on a few hundred messages.

It is the instrument issue 16's goal is measured with, and it reaches into broadcaster (the
ledger's write, the email channel, the CLI): a change to any of those could break it with no
other test noticing. Each of its rows checks that every message arrived where it should (the
ledger complete after `announce`, every result recorded after the channel alone), so a run
that exits cleanly delivered everything. Speed is not checked here: that is the benchmark's
own job, run apart (`make bench`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.standins.smtp import SmtpSink

ROOT = Path(__file__).resolve().parent.parent


def test_the_email_fanout_benchmark_runs_every_row_and_says_where_the_time_goes():
    try:
        SmtpSink().stop()
    except RuntimeError as exc:  # no Postfix: the benchmark cannot run either
        pytest.skip(str(exc))
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "email_fanout.py"), "-n", "300", "--connections", "2",
         "--broadcaster-only"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("  ")[0]: line for line in done.stdout.splitlines() if "  " in line}
    for name in ("pipelined ceiling (raw sockets, 2 conns)", "pipelined, each result fsync'd first",
                 "the same, each result in broadcaster's ledger",
                 "broadcaster's email channel alone, that write", "broadcaster announce (whole command)",
                 "broadcaster show ID --json (after it)"):
        assert name in rows, f"no row {name!r} in:\n{done.stdout}"
        assert "300" in rows[name], rows[name]
    assert "goal: broadcaster announce >= 0.50 of the pipelined ceiling" in done.stdout
    assert "with each result written as broadcaster's ledger writes it" in done.stdout
