"""Email to a relay that limits how fast one client sends: the whole `broadcaster announce`
several ways, beside the relay's own limit, in one run.

The relay is broadcaster's SMTP stand-in (aiosmtpd, on loopback) taking `--rate` messages in
any second (or `--rate` × `--per` in any `--per` seconds: `--per 60` for a relay that counts by
the minute, as Postfix's anvil and Exchange Online do) and answering the text of the rest
`454 Throttling failure: Maximum sending rate exceeded`, as Amazon SES does past an account's
maximum send rate. Each row is `broadcaster announce --yes --json` as a user runs it, with the
default retry settings (`--attempts`, backoff from 1 s) and 16 connections:

- full speed, never slowing: the command as it was before its pace followed the relay (the
  pace's `heard` made to do nothing, and every round put off spending an attempt, in that
  process alone): each round gets little more than the relay's burst through, and the rest is
  left failed for `retry`;
- rate unset, the pace found from the relay's refusals: what the command does now;
- the same in batches of a tenth of the list (`[worker] batch`), with every round put off
  spending an attempt as before, and as now: a round only put off for coming too fast spends
  none while the relay took one of the batch's messages within `PUT_OFF_PATIENCE` (against a
  relay that counts by the minute, small batches before were refused for the rest of its
  minute and left failed);
- rate set to the relay's: `[channels.email] rate` = `--rate`, as the README advises;
- the same with `--workers` `broadcaster worker`s started beforehand on the same ledger, taking
  batches of the list beside the command (a tenth of it again: the default 5,000 would leave a
  worker nothing): each at the whole rate, as every sender went before they shared it
  (`Pace.share` made to do nothing in each of their processes), and sharing it as they do now;
- the relay's limit: its burst taken at once, the rest at its rate (no sender is faster).

Each row says how many were sent, how many were left failed, how many texts the relay put off
on the way (each goes round again), and the time against the limit.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ORGANIZATION

from broadcaster.standins.smtp import SmtpStandIn

#: What each way changes in its processes to run the command as it was before one change:
#: a pace that never slows for the relay, a rate that is not shared with the other senders,
#: rounds put off for coming too fast that spend their attempts like any other.
BEFORE = {
    "slowing": "p.Pace.heard = lambda self, now, taken, put_off: False; ",
    "sharing": "p.Pace.share = lambda self, senders, rank, now: None; ",
    "patience": "defaults.PUT_OFF_PATIENCE = 0; ",
}


def command(before: tuple[str, ...]) -> list[str]:
    """`python -m broadcaster`, or, with `before`, a process with those changes undone."""
    if not before:
        return [sys.executable, "-m", "broadcaster"]
    return [sys.executable, "-c", "import sys; from broadcaster.channels import smtp_pipelining as p; "
            "from broadcaster import defaults; " + "".join(BEFORE[b] for b in before)
            + "from broadcaster.cli import main; sys.argv[0] = 'broadcaster'; sys.exit(main())"]


def project(folder: Path, port: int, subscribers: int, attempts: int, rate: float | None,
            batch: int | None = None) -> Path:
    """A project folder sending to `port` over 16 connections, with its subscribers imported
    (claimed `batch` at a time if given: the default, 5,000, would leave a worker nothing of a
    few thousand); its settings file."""
    folder.mkdir(parents=True)
    settings = folder / "settings.toml"
    settings.write_text(ORGANIZATION + f"""
[channels.email]
enabled = true
host = "127.0.0.1"
port = {port}
sender = "Example Corp Status <status@example.com>"
connections = 16
{f"rate = {rate:g}" if rate else ""}

[retry]
attempts = {attempts}
{f"[worker]{chr(10)}batch = {batch}{chr(10)}poll_seconds = 0.2" if batch else ""}
""", encoding="utf-8")
    (folder / "subscribers.csv").write_text(
        "email\n" + "".join(f"user{n}@example.com\n" for n in range(subscribers)), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "broadcaster", "--config", str(settings), "subscribers", "import"],
                   check=True, capture_output=True)
    return settings


def announce(settings: Path, *, before: tuple[str, ...] = (), workers: int = 0,
             small: bool = False) -> tuple[float, dict]:
    """The whole command (with `workers` started beforehand, stopped once it is done; as it
    was `before` the changes named, in every process): its wall time and its JSON outcome.
    (`small`: batches of a tenth of the list, set by `project`.)"""
    python = command(before)
    config = ["--config", str(settings)]
    helpers = [subprocess.Popen([*python, *config, "worker"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    try:
        for helper in helpers:
            assert helper.stderr is not None and "started" in helper.stderr.readline()
        began = time.perf_counter()
        done = subprocess.run([*python, *config, "announce", "--title", "Payments down",
                               "--message", "Card payments fail.", "--yes", "--json"],
                              capture_output=True, text=True)
        took = time.perf_counter() - began
    finally:
        for helper in helpers:
            helper.send_signal(signal.SIGTERM)
            helper.communicate(timeout=120)
    if done.returncode not in (0, 3):  # 3: some left failed, which the first row expects
        raise RuntimeError(f"announce exited with {done.returncode}: {done.stderr[-2000:]}")
    return took, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="subscribers (default 3,000)")
    parser.add_argument("--rate", type=int, default=100,
                        help="messages a second the relay takes (default 100)")
    parser.add_argument("--per", type=float, default=1.0,
                        help="the period the relay counts over, in seconds (default 1; 60: by the minute)")
    parser.add_argument("--attempts", type=int, default=6, help="[retry] attempts (default 6, the default)")
    parser.add_argument("--workers", type=int, default=1,
                        help="broadcaster workers beside the command in the last two ways (default 1)")
    args = parser.parse_args()
    burst = round(args.rate * args.per)
    limit = max(0, args.n - burst) / args.rate
    rate, more = args.rate, f"+ {args.workers} worker{'s' if args.workers > 1 else ''}"
    ways: list[tuple[str, int | None, dict]] = [
        ("full speed, never slowing (before)", None, {"before": ("slowing", "patience")}),
        ("rate unset: the pace found from the relay", None, {}),
        ("rate unset, batches of a tenth (before)", None, {"small": True, "before": ("patience",)}),
        ("rate unset, batches of a tenth", None, {"small": True}),
        (f"rate = {rate}, the relay's", rate, {})]
    if args.workers:
        ways += [(f"rate = {rate} {more}, each at it (before)", rate,
                  {"workers": args.workers, "small": True, "before": ("sharing",)}),
                 (f"rate = {rate} {more}, shared", rate, {"workers": args.workers, "small": True})]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, rate, how) in enumerate(ways):
            print(f"running {name} …", file=sys.stderr, flush=True)
            with SmtpStandIn() as relay:
                relay.max_rate = (burst, args.per)
                batch = max(1, args.n // 10) if how.get("small") else None
                settings = project(Path(tmp) / str(n), relay.port, args.n, args.attempts, rate, batch)
                took, outcome = announce(settings, **how)
                counts = outcome["recipients"]["email"]
                delivered = len({a for m in relay.messages for a in m.envelope_to})
                assert delivered == counts.get("sent", 0), "the ledger says what the relay took"
                said = [w for w in outcome["warnings"] if w.startswith("email: ")]
                sent, failed = counts.get("sent", 0), counts.get("failed", 0)
                rows.append((name, sent, failed, relay.throttled, took, said))
    per = "a second" if args.per == 1 else f"counted over {args.per:g} s"
    print(f"{args.n:,} subscribers, a relay taking {args.rate} a second ({burst:,} {per}; the rest 454), "
          f"16 connections, [retry] attempts = {args.attempts}")
    print(f"{'way':<44}{'sent':>7}{'failed':>8}{'put off':>9}{'seconds':>9}{'vs limit':>10}")
    for name, sent, failed, put_off, took, _ in rows:
        versus = f"{limit / took:.2f}" if not failed and limit else ""
        print(f"{name:<44}{sent:>7,}{failed:>8,}{put_off:>9,}{took:>9.1f}{versus:>10}")
    name = "the relay's limit (its burst, then its rate)"
    print(f"{name:<44}{args.n:>7,}{0:>8}{0:>9}{limit:>9.1f}{'1.00':>10}")
    for name, *_, said in rows:
        for line in said:
            print(f"{name}: {line}")


if __name__ == "__main__":
    main()
