"""Email fan-out: the whole `broadcaster announce` beside the raw, naive and Apprise ways.

All of them deliver N personalised messages to Postfix's C `smtp-sink` on loopback, in one
run, and all send the same content: broadcaster's own rendered announcement (text and HTML,
about 5 KB), taken from a dry run.

- broadcaster: `broadcaster announce --yes` as a user runs it (start-up, preflight, the
  status site, the ledger, 4 SMTP connections, the report), N subscribers;
- raw loop: that message built once, only the recipient substituted, 4 reused connections
  (the ceiling for smtplib on this machine); also shown with a 350-byte text-only message,
  for reference;
- naive loop: an `EmailMessage` built and `send_message` per recipient, one connection;
- Apprise: `mailto://` with the same N recipients (one message per recipient).

Goal (issue 4): the whole announce at >= 0.6 of the raw loop's rate (same message).
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from common import ORGANIZATION

from broadcaster.standins.smtp import SmtpSink

ROOT = Path(__file__).resolve().parent.parent
SENDER = "status@example.com"
SUBJECT = "[Investigating] Card payments failing · Example Corp"
BODY = ("Some card payments fail at checkout. We are investigating.\n\n"
        "Pay by bank transfer for now, or retry in a few minutes. Your basket is kept.\n\n"
        "Read the official statement: https://status.example.com/incidents/k7q2m9xw4d/\n")


WORDS = {
    "en": {"title": "Card payments failing", "guidance": "Pay by **bank transfer** for now.",
           "message": "Some card payments fail at checkout. We are investigating."},
    "es": {"title": "Fallan los pagos con tarjeta", "guidance": "Pague por **transferencia** por ahora.",
           "message": "Algunos pagos con tarjeta fallan. Lo estamos investigando."},
}
ANNOUNCE = ["announce", "--next-update", "30m",
            *(arg for locale, words in WORDS.items() for field, text in words.items()
              for arg in (f"--{field}" if locale == "en" else f"--{field}-{locale}", text))]


def subscribed(folder: Path, port: int, recipients: list[str], state: str = 'path = "state.db"') -> list[str]:
    """A project folder whose email goes to `port`, with N subscribers imported (a third in
    Spanish); the CLI to run in it. `state` is its [state] line (SQLite by default)."""
    settings = folder / "settings.toml"
    settings.write_text(ORGANIZATION.replace('path = "state.db"', state) + f"""
[channels.email]
enabled = true
host = "127.0.0.1"
port = {port}
sender = "Example Corp Status <{SENDER}>"
connections = 4
""", encoding="utf-8")
    (folder / "subscribers.csv").write_text("email,locale\n" + "".join(
        f"{r},{'es' if n % 3 == 0 else 'en'}\n" for n, r in enumerate(recipients)), encoding="utf-8")
    cli = [str(Path(sys.executable).parent / "broadcaster"), "--config", str(settings)]
    subprocess.run([*cli, "subscribers", "import"], check=True, stdout=subprocess.DEVNULL)
    return cli


def setup(port: int, recipients: list[str], folder: Path) -> tuple[list[str], dict]:
    """A project with N subscribers; the CLI, and the email broadcaster will send (dry run)."""
    cli = subscribed(folder, port, recipients)
    settings = cli[2]
    from broadcaster import api

    en = WORDS["en"]
    preview = api.announce(en["title"], en["message"], guidance=en["guidance"], next_update="30m",
                           translations={"es": WORDS["es"]}, dry_run=True, settings=settings).preview
    post = next(p.post for p in preview.planned if p.channel == "email" and p.locale == "en")
    return cli, {"subject": post.subject, "text": post.text, "html": post.html}


def broadcaster_announce(cli: list[str], recipients: list[str], folder: Path) -> float:
    """The whole command, timed from the shell's point of view; then every delivery checked."""
    start = time.perf_counter()
    subprocess.run([*cli, *ANNOUNCE, "--yes"], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    db = sqlite3.connect(folder / "state.db")
    sent = db.execute("SELECT COUNT(*) FROM deliveries WHERE channel = 'email' AND state = 'sent'")
    assert sent.fetchone()[0] == len(recipients), "broadcaster did not deliver every message"
    return elapsed


def build(to: str, content: dict | None) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = SENDER, to
    if content is None:
        message["Subject"] = SUBJECT
        message.set_content(BODY)
        return message
    message["Subject"] = content["subject"]
    message.set_content(content["text"])
    message.add_alternative(content["html"], subtype="html")
    return message


def raw_loop(port: int, recipients: list[str], content: dict | None, connections: int = 4) -> float:
    data = build("rcpt@placeholder.invalid", content).as_bytes()

    def lane(share: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for r in share:
                smtp.sendmail(SENDER, [r], data.replace(b"rcpt@placeholder.invalid", r.encode()))

    start = time.perf_counter()
    threads = [threading.Thread(target=lane, args=(recipients[i::connections],)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def naive_loop(port: int, recipients: list[str], content: dict) -> float:
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for r in recipients:
            smtp.send_message(build(r, content))
    return time.perf_counter() - start


def apprise_mailto(port: int, recipients: list[str], content: dict) -> float:
    import apprise

    notifier = apprise.Apprise()
    url = f"mailto://127.0.0.1:{port}?from={SENDER}&to={','.join(recipients)}&mode=insecure"
    if not notifier.add(url):
        raise RuntimeError("Apprise refused the mailto:// URL")
    start = time.perf_counter()
    if not notifier.notify(body=content["html"], title=content["subject"], body_format="html"):
        raise RuntimeError("Apprise reported a failure")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages per method (default 20,000)")
    args = parser.parse_args()
    recipients = [f"subscriber{n}@example.com" for n in range(args.n)]
    try:
        sink = SmtpSink()
    except RuntimeError as exc:
        sys.exit(str(exc))
    rows: list[tuple[str, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="broadcaster-bench-") as tmp:
            folder = Path(tmp)
            cli, content = setup(sink.port, recipients, folder)
            size = len(build(recipients[0], content).as_bytes())
            port = sink.port
            methods: list[tuple[str, Callable[[], float]]] = [
                ("raw loop (pre-rendered, 4 connections)", lambda: raw_loop(port, recipients, content)),
                ("broadcaster announce (whole command)",
                 lambda: broadcaster_announce(cli, recipients, folder)),
                ("naive loop (EmailMessage + send_message)", lambda: naive_loop(port, recipients, content)),
                ("Apprise mailto://", lambda: apprise_mailto(port, recipients, content)),
                ("raw loop, 350-byte text message (reference)", lambda: raw_loop(port, recipients, None)),
            ]
            for name, run in methods:
                print(f"running {name} …", file=sys.stderr, flush=True)
                rows.append((name, run()))
    finally:
        sink.stop()
    raw_rate = args.n / rows[0][1]
    print(f"\n{args.n:,} personalised messages of about {size:,} bytes (text + HTML) to smtp-sink "
          f"on 127.0.0.1, {os.cpu_count()} cores\n")
    print(f"{'method':<46} {'seconds':>8} {'msgs/s':>9} {'vs raw':>7}")
    for name, seconds in rows:
        rate = args.n / seconds
        print(f"{name:<46} {seconds:>8.2f} {rate:>9,.0f} {rate / raw_rate:>7.2f}")
    whole = args.n / rows[1][1] / raw_rate
    print(f"\ngoal: broadcaster announce >= 0.60 of the raw loop: {'met' if whole >= 0.6 else 'NOT met'} "
          f"({whole:.2f})")


if __name__ == "__main__":
    main()
