"""Alert hook throughput: signed generic alerts with distinct keys, each a new draft.

A real `broadcaster serve` (uvicorn) on loopback receives signed `POST /hooks/generic`
requests from 1 and 8 client threads. Side by side in one run:

- broadcaster: each alert drafts a new incident (validated, recorded, no site rendered);
- the naive way: the same alert through `broadcaster announce --draft` as a new process
  per alert (what a script would do without the hook);
- the limit: `GET /healthz` on the same server, one ledger read and no work (HTTP, signing
  and the event loop's own cost).

The flood limits are raised for the run (they would answer 429 after 30 a minute), so what
is measured is the work per draft. Report the table in the README (issue 13: drafting is fast).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from common import ORGANIZATION, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "bench-hook-secret-0123456789abcdef"
SETTINGS = ORGANIZATION + """
[automation]
alerts_per_minute = 1000000
changes_per_key_per_minute = 1000000
"""


def concurrently(count: int, clients: int, one: Callable[[requests.Session, int], None]) -> list[float]:
    """Run `one(session, n)` for n in range(count) from `clients` threads; each call's seconds."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        session = requests.Session()
        for n in range(offset, count, clients):
            started = time.perf_counter()
            one(session, n)
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def post_alerts(url: str, count: int, clients: int, prefix: str) -> list[float]:
    """Send `count` signed alerts (distinct keys) from `clients` threads."""
    from broadcaster.hooks import sign

    def one(session: requests.Session, n: int) -> None:
        body = json.dumps({"title": f"Alert {n}", "message": "Checkout errors above 20%.",
                           "impact": "major", "dedupe_key": f"{prefix}-{n}"}).encode()
        stamp = str(int(time.time()))
        answer = session.post(url, data=body, timeout=60, headers={
            "Content-Type": "application/json", "X-Broadcaster-Timestamp": stamp,
            "X-Broadcaster-Signature": sign(SECRET, stamp, body)})
        assert answer.status_code == 200, answer.text

    return concurrently(count, clients, one)


def health(url: str, count: int, clients: int) -> list[float]:
    def one(session: requests.Session, n: int) -> None:
        assert session.get(url, timeout=60).status_code == 200

    return concurrently(count, clients, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=200, help="alerts per run (default 200)")
    parser.add_argument("--naive", type=int, default=10, help="alerts for the naive way (default 10)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "settings.toml").write_text(SETTINGS, encoding="utf-8")
        port = free_port()
        env = {**os.environ, "BROADCASTER_HOOK_SECRET": SECRET}
        server = subprocess.Popen([str(BIN / "broadcaster"), "--config", str(root / "settings.toml"), "serve",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(base + "/healthz", timeout=2)
                    break
                except requests.ConnectionError:
                    if time.monotonic() > deadline:
                        raise SystemExit("serve did not start") from None
                    time.sleep(0.1)
            for clients in (1, 8):
                started = time.perf_counter()
                latencies = post_alerts(base + "/hooks/generic", args.alerts, clients, f"c{clients}")
                wall = time.perf_counter() - started
                rows.append((f"broadcaster serve, new drafts, {clients} client(s)", args.alerts / wall,
                             statistics.median(latencies), sorted(latencies)[int(len(latencies) * 0.99) - 1]))
            for clients in (1, 8):
                started = time.perf_counter()
                latencies = health(base + "/healthz", args.alerts, clients)
                wall = time.perf_counter() - started
                rows.append((f"limit: GET /healthz, {clients} client(s)", args.alerts / wall,
                             statistics.median(latencies), sorted(latencies)[int(len(latencies) * 0.99) - 1]))
        finally:
            server.terminate()
            server.wait(timeout=30)
        naive = []
        for n in range(args.naive):
            started = time.perf_counter()
            subprocess.run([str(BIN / "broadcaster"), "--config", str(root / "settings.toml"), "announce",
                            "--title", f"Alert {n}", "--message", "Checkout errors.", "--impact", "major",
                            "--draft", "--json"], check=True, capture_output=True)
            naive.append(time.perf_counter() - started)
        rows.append(("naive: `broadcaster announce --draft` per alert", 1 / statistics.mean(naive),
                     statistics.median(naive), max(naive)))
    print(f"\n{args.alerts} signed alerts with distinct keys (each a new draft), loopback, 2 cores\n")
    print(f"{'method':<52}{'drafts/s':>10}{'median ms':>11}{'p99 ms':>9}")
    for name, rate, median, p99 in rows:
        print(f"{name:<52}{rate:>10.1f}{median * 1000:>11.1f}{p99 * 1000:>9.1f}")


if __name__ == "__main__":
    main()
