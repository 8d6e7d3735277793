"""The email fan-out benchmark still runs end to end, on a few hundred messages.

It is the instrument issue 16's goal is measured with, and it reaches into broadcaster (the
ledger's write, the email channel, the CLI): a change to any of those could break it with no
other test noticing. Each of its rows checks that every message arrived where it should (the
ledger complete after `announce`, `update` and `retry`, every result recorded after the channel
alone), so a run that exits cleanly delivered everything. Speed is not checked here: that is the benchmark's
own job, run apart (`make bench`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.standins.smtp import SmtpSink

ROOT = Path(__file__).resolve().parent.parent


#: The rows of `--broadcaster-only`, and those the whole run adds (Apprise, smtplib, 2 ms proxy,
#: and the proxy that refuses all but one connection at first).
BROADCASTER_ROWS = ("pipelined ceiling (raw sockets, 2 conns)", "pipelined, each result fsync'd first",
                    "the same, each result in broadcaster's ledger",
                    "broadcaster's email channel alone, that write", "broadcaster announce (whole command)",
                    "broadcaster show ID --json (after it)", "broadcaster update (whole command, threaded)",
                    "broadcaster retry (the list left failed)", "broadcaster subscribers list --json",
                    "broadcaster state export (the whole ledger)",
                    "broadcaster state import (that file, a new ledger)")
OTHER_ROWS = ("smtplib raw loop (2 connections)", "naive loop (EmailMessage + send_message)",
              "Apprise mailto://", "pipelined ceiling, 2 ms round trip",
              "pipelined, fsync'd first, 2 ms round trip", "smtplib raw loop, 2 ms round trip",
              "broadcaster announce, 2 ms round trip", "announce, 2 ms round trip, 1 of 2 refused")


def bench_rows(*options: str) -> tuple[dict[str, str], str]:
    """The benchmark run on 300 messages over 2 connections: its rows by name, and all it printed."""
    try:
        SmtpSink().stop()
    except RuntimeError as exc:  # no Postfix: the benchmark cannot run either
        pytest.skip(str(exc))
    bench = ROOT / "bench" / "email_fanout.py"
    done = subprocess.run(
        [sys.executable, str(bench), "-n", "300", "--connections", "2", *options],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {line.split("  ")[0]: line for line in done.stdout.splitlines() if "  " in line}, done.stdout


def test_the_email_fanout_benchmark_runs_every_row_and_says_where_the_time_goes():
    rows, printed = bench_rows("--broadcaster-only")
    for name in BROADCASTER_ROWS:
        assert name in rows, f"no row {name!r} in:\n{printed}"
        assert "300" in rows[name], rows[name]
    assert not set(OTHER_ROWS) & set(rows), "--broadcaster-only runs broadcaster's rows alone"
    assert "goal: broadcaster announce >= 0.50 of the pipelined ceiling" in printed
    assert "with each result written as broadcaster's ledger writes it" in printed


def test_the_whole_email_fanout_benchmark_runs_too():
    """Without `--broadcaster-only`: the other ways to send (smtplib, the naive loop, Apprise)
    and the rows through the proxy that delays each reply by 2 ms, as `make bench` runs them."""
    rows, printed = bench_rows()
    for name in (*BROADCASTER_ROWS, *OTHER_ROWS):
        assert name in rows, f"no row {name!r} in:\n{printed}"
        assert "300" in rows[name], rows[name]
    assert "broadcaster subscribers import (the CSV)" in rows


def test_the_relay_rate_benchmark_runs_every_way_and_the_way_before_puts_most_off():
    """`bench/email_relay_rate.py` on 60 subscribers and a relay taking 20 a second: the seven
    ways (two in small batches, two with a worker beside the command) and the limit are
    printed, the ledger of each agrees with what the relay kept (the benchmark checks), and at
    full speed, never slowing, the relay puts off most of what is sent."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "email_relay_rate.py"), "-n", "60", "--rate", "20",
         "--attempts", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = ("full speed, never slowing (before)", "rate unset: the pace found from the relay",
             "rate = 20, the relay's", "the relay's limit (its burst, then its rate)",
             "rate unset, batches of a tenth (before)", "rate unset, batches of a tenth",
             "rate = 20 + 1 worker, each at it (before)", "rate = 20 + 1 worker, shared")
    lines = done.stdout.splitlines()
    rows = {line[:44].strip(): line[44:].split() for line in lines if line[:44].strip() in names}
    assert len(rows) == 8, done.stdout
    for sent, failed, *_ in rows.values():
        assert int(sent) + int(failed) == 60, done.stdout
    # At full speed each round's texts go within a moment and the relay takes 20 in any second
    # of them, so most of the first round is put off; how many are left failed depends on how
    # long this machine took over the rounds (a busy one spread them out: 8 rather than 20).
    put_off = {name: int(row[2]) for name, row in rows.items()}
    assert put_off[names[0]] >= 20 and put_off[names[0]] > 2 * put_off[names[2]], put_off
    assert rows[names[3]][3] == "2.0", "40 after the burst, at 20 a second"
