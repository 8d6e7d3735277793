"""Workers: one announcement to N subscribers, the command alone and with 1, 2 and 4 workers.

Everything sends to Postfix's C `smtp-sink` on loopback, in one run:

- SQLite, the command alone: `broadcaster announce --yes` on one machine (the default);
- PostgreSQL, the command alone, then with 1, 2 and 4 `broadcaster worker`s started
  beforehand: they claim batches of the same list (each under a lease, one row a batch) while
  the command sends its own; the command waits for the last batch, so its time is the whole
  fan-out. Every run's ledger is checked afterwards: N deliveries sent, and who sent how many
  (the settled leases say);
- the ceiling: the pipelined raw-socket client of `email_fanout.py` (the message rendered and
  dot-stuffed once, 4 connections, one round trip a message), then the smtplib raw loop (only
  the recipient substituted, four round trips a message) and the naive loop (an
  `EmailMessage` and `send_message` per recipient, one connection; measured on a sample, it
  is slow).

A PostgreSQL server is started for the run (scripts/postgres, in a temporary folder), or
BROADCASTER_TEST_POSTGRES_URL/_PASSWORD name one. On 2 cores the workers share the CPUs with
the command and PostgreSQL: what they show here is that a list spreads over senders with no
loss and little overhead; on several hosts each brings its own CPU and connections.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from email_fanout import ANNOUNCE, naive_loop, pipelined_loop, raw_loop, setup, subscribed

from broadcaster.standins.smtp import SmtpSink

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class Server:
    """The PostgreSQL server the runs share: the one named in the environment, or our own."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        url = os.environ.get("BROADCASTER_TEST_POSTGRES_URL", "")
        password = os.environ.get("BROADCASTER_TEST_POSTGRES_PASSWORD", "")
        if not url:
            # Its own folder, open to the `postgres` user the server runs as under root.
            folder = Path(tempfile.mkdtemp(prefix="broadcaster-bench-pg-"))
            folder.chmod(0o755)
            self.folder = folder / "pg"
            started = subprocess.run([str(ROOT / "scripts" / "postgres"), "start", str(self.folder)],
                                     capture_output=True, text=True)
            if started.returncode != 0:
                sys.exit(f"could not start PostgreSQL: {started.stderr.strip()}")
            found = dict(line.removeprefix("export ").split("=", 1)
                         for line in started.stdout.splitlines() if line.startswith("export "))
            url = found["BROADCASTER_TEST_POSTGRES_URL"]
            password = found["BROADCASTER_TEST_POSTGRES_PASSWORD"]
        self.url, self.password = url, password

    def database(self) -> str:
        import psycopg

        name = f"bench_{secrets.token_hex(4)}"
        with psycopg.connect(self.url, password=self.password or None, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self.folder is not None:
            subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", str(self.folder)],
                           capture_output=True)
            self.folder.parent.rmdir()


def project(folder: Path, port: int, recipients: list[str], url: str | None) -> list[str]:
    """A project with N subscribers on SQLite (url None) or on a fresh PostgreSQL database."""
    folder.mkdir()
    return subscribed(folder, port, recipients, f'url = "{url}"' if url else 'path = "state.db"')


def announce(cli: list[str], workers: int, n: int) -> tuple[float, Counter]:
    """The whole command, with `workers` started (and seen started) before it; who sent what."""
    helpers = [subprocess.Popen([*cli, "worker"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True) for _ in range(workers)]
    try:
        for helper in helpers:
            assert "started" in helper.stderr.readline(), "a worker did not start"  # type: ignore[union-attr]
        start = time.perf_counter()
        subprocess.run([*cli, *ANNOUNCE, "--yes"], check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
    finally:
        for helper in helpers:
            helper.terminate()
            helper.wait(timeout=120)
    from broadcaster.ledger import open_ledger
    from broadcaster.settings import load_settings

    with open_ledger(load_settings(cli[2]), read_only=True) as ledger:
        states = ledger.query("SELECT state, COUNT(*) FROM deliveries WHERE channel = 'email' GROUP BY state")  # type: ignore[attr-defined]
        owners = ledger.senders("email")
    assert dict(states) == {"sent": n}, "not every delivery was sent"
    return elapsed, Counter(owners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="subscribers (default 200,000)")
    parser.add_argument("--naive-sample", type=int, default=5_000, help="messages the naive loop sends")
    args = parser.parse_args()
    recipients = [f"subscriber{n}@example.com" for n in range(args.n)]
    sink = SmtpSink()
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="broadcaster-bench-") as tmp:
        server = Server()
        os.environ["BROADCASTER_STATE_PASSWORD"] = server.password
        try:
            print(f"setting up {args.n:,} subscribers in SQLite …", file=sys.stderr, flush=True)
            cli = project(Path(tmp) / "sqlite", sink.port, recipients, None)
            (Path(tmp) / "content").mkdir()  # the message all of them send (an English one)
            _, content = setup(sink.port, recipients[:2], Path(tmp) / "content")
            print("running the pipelined ceiling and the smtplib raw loop …", file=sys.stderr, flush=True)
            rows.append(("pipelined ceiling (raw sockets, 4 connections)",
                         pipelined_loop(sink.port, recipients, content), ""))
            rows.append(("smtplib raw loop (pre-rendered, 4 connections)",
                         raw_loop(sink.port, recipients, content), ""))
            print("running SQLite, the command alone …", file=sys.stderr, flush=True)
            seconds, _ = announce(cli, 0, args.n)
            rows.append(("SQLite: broadcaster announce alone", seconds, "1 sender"))
            for workers in (0, 1, 2, 4):
                print(f"setting up PostgreSQL for {workers} workers …", file=sys.stderr, flush=True)
                cli = project(Path(tmp) / f"pg{workers}", sink.port, recipients, server.database())
                print(f"running PostgreSQL with {workers} workers …", file=sys.stderr, flush=True)
                seconds, owners = announce(cli, workers, args.n)
                spread = " / ".join(f"{n:,}" for n in sorted(owners.values(), reverse=True))
                label = "alone" if not workers else f"+ {workers} worker" + ("s" if workers > 1 else "")
                rows.append((f"PostgreSQL: announce {label}", seconds, spread))
            print("running the naive loop on a sample …", file=sys.stderr, flush=True)
            sample = recipients[:args.naive_sample]
            naive = naive_loop(sink.port, sample, content) * args.n / len(sample)
            rows.append((f"naive loop (1 connection; {len(sample):,} sent, scaled)", naive, ""))
        finally:
            server.stop()
            sink.stop()
    ceiling = args.n / rows[0][1]
    print(f"\nOne announcement to {args.n:,} subscribers (personal text + HTML messages) to smtp-sink on "
          f"127.0.0.1, {os.cpu_count()} cores\n")
    print(f"{'run':<50} {'seconds':>8} {'msgs/s':>8} {'vs ceiling':>10}  recipients per sender")
    for name, seconds, spread in rows:
        rate = args.n / seconds
        print(f"{name:<50} {seconds:>8.1f} {rate:>8,.0f} {rate / ceiling:>10.2f}  {spread}")


if __name__ == "__main__":
    main()
