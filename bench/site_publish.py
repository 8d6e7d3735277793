"""Publishing an update as history grows: broadcaster's incremental writes beside a full rebuild.

For ledgers holding H resolved incidents spread over the past years (H = 100, 1,000, 10,000),
time one `update` of an open incident through the whole pipeline with the website (what an
operator waits for), and beside it the naive way: regenerating the whole site
(`broadcaster site build`) on every update. Goal (issue 5): the update's cost does not grow
with years of history. Then a `site build` that changes nothing (statements and months whose
inputs are unchanged are not rendered), as a share of the full build. Goal (issue 16): ≤ 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ORGANIZATION

SETTINGS = ORGANIZATION + """
[[components]]
name = "Payments API"

[[regions]]
name = "Madrid"
postcodes = ["28"]
"""


def seed(folder: Path, history: int) -> Path:
    """A ledger with `history` resolved incidents over the past years, and one open incident."""
    from broadcaster.ledger.sqlite import SQLiteLedger
    from broadcaster.model import Impact, Kind, Status, Text, Update, new_incident_id

    settings = folder / "settings.toml"
    settings.write_text(SETTINGS, encoding="utf-8")
    ledger = SQLiteLedger(folder / "state.db")
    ledger.query("PRAGMA synchronous = OFF")  # seeding only; the timed commands use the real settings
    start = datetime.now(UTC) - timedelta(days=5 * 365)
    step = timedelta(days=5 * 365) / max(history, 1)
    texts = {"en": Text("Card payments failing", "Some card payments fail."),
             "es": Text("Fallan los pagos", "Fallan algunos pagos.")}
    for n in range(history):
        incident = new_incident_id()
        when = start + step * n
        for seq, (kind, status) in enumerate([(Kind.ANNOUNCE, Status.INVESTIGATING),
                                              (Kind.RESOLVE, Status.RESOLVED)], start=1):
            ledger.record(Update(f"{incident}-{seq}", incident, seq, kind, status, Impact.MAJOR,
                                 ("Payments API",), ("Madrid",), texts, when + timedelta(hours=seq)), [])
    ledger.close()
    return settings


def timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def measure(history: int, updates: int) -> tuple[int, int, float, float, float]:
    """(history, files in the site, median update seconds, full build seconds, seconds of a
    build that changes nothing)."""
    from broadcaster import api

    with tempfile.TemporaryDirectory(prefix="broadcaster-site-bench-") as tmp:
        print(f"seeding {history:,} incidents …", file=sys.stderr, flush=True)
        settings = seed(Path(tmp), history)
        incident = api.announce("Checkout slow", "Checkout is slow.", settings=settings).incident_id
        full = timed(lambda: api.build_site(settings=settings))  # the history's pages do not exist yet
        unchanged = timed(lambda: api.build_site(settings=settings))
        samples = [timed(lambda n=n: api.update(incident, f"Still slow ({n}).", status="identified",
                                                settings=settings))
                   for n in range(updates)]
        files = sum(1 for p in (Path(tmp) / "public").rglob("*") if p.is_file())
    return history, files, statistics.median(samples), full, unchanged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="history sizes (comma-separated)")
    parser.add_argument("--updates", type=int, default=5, help="updates timed per size (median shown)")
    args = parser.parse_args()
    rows = [measure(int(size), args.updates) for size in args.sizes.split(",")]
    print(f"\nOne update (website only, 2 locales) as history grows, median of {args.updates}; "
          "`site build` of the whole site, and again with nothing changed\n")
    print(f"{'incidents':>10} {'site files':>11} {'update ms':>10} {'full build s':>13} "
          f"{'no-change build s':>18} {'no-change/full':>15}")
    for history, files, update, full, unchanged in rows:
        print(f"{history:>10,} {files:>11,} {update * 1000:>10.0f} {full:>13.2f} {unchanged:>18.2f} "
              f"{unchanged / full:>15.2f}")
    first, last = rows[0][2], rows[-1][2]
    print(f"\nupdate cost at {rows[-1][0]:,} vs {rows[0][0]:,} incidents: x{last / first:.2f} "
          f"({'flat' if last / first < 1.5 else 'GROWS'}); a build with nothing changed costs "
          f"{max(r[4] / r[3] for r in rows):.0%} of a full one at most (goal: 10 %)")


if __name__ == "__main__":
    main()
