"""Seeded, randomised fault injection: nothing lost, nothing sent twice.

Each run takes an incident through announce → update → resolve with the website, X, the
Facebook Page and eight email subscribers, against the X and Graph stand-ins and a real SMTP
server, all misbehaving at random: 5xx, HTML error pages, rate limits, throttling, slow
answers past the timeout, connections dropped before or after the platform acted, SMTP
disconnects, refused recipients and a relay at its limit of connections (421 past one). Some
commands are killed with SIGKILL at a random moment, and `broadcaster worker`s started
beside them (sharing the mailing list in leased batches, finishing what a killed command left)
are killed at random too.
After each step `broadcaster retry` runs until it reports everything done (refusals are
lifted first, as a person would fix them). Then the invariants are checked:

- every (update × channel × recipient) delivery is sent, exactly once: one post per update on
  X and one post or comment on Facebook, never two with the same text; one email per
  subscriber per update (a copy re-sent because the SMTP answer was lost carries the same
  Message-ID and is counted apart, as mail programs show it once);
- the X thread is one chain, announcement to resolution.

`make test` runs a handful of seeds; `make test-slow` runs FAULT_SEEDS (default 200) and
prints the figures the README's "Guarantees" section reports. Both run on the store
BROADCASTER_TEST_STATE names (SQLite by default, or PostgreSQL).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from conftest import BASE_SETTINGS, BIN, Project

from broadcaster.standins.graph_api import DRILL_PAGE_TOKEN, GraphStandIn
from broadcaster.standins.server import Fault
from broadcaster.standins.smtp import SmtpStandIn
from broadcaster.standins.x_api import DRILL_CREDENTIALS, XStandIn

SUBSCRIBERS = [f"s{n}@example.com" for n in range(8)]
STEPS = [
    ("announce", ["announce", "--title", "Payments down {seed}", "--message",
                  "Card payments fail ({seed})."]),
    ("update", ["update", "{incident}", "--status", "identified", "--message", "Cause found ({seed})."]),
    ("resolve", ["resolve", "{incident}", "--message", "Fixed ({seed}).", "--apology", "Sorry ({seed})."]),
]


@dataclass
class Figures:
    runs: int = 0
    faults: Counter = field(default_factory=Counter)
    kills: int = 0
    workers: int = 0
    workers_killed: int = 0
    retries: int = 0
    duplicates: int = 0
    losses: int = 0
    resent_same_message_id: int = 0

    def line(self) -> str:
        return (f"runs {self.runs}, faults injected {sum(self.faults.values())} "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.faults.items()))}), SIGKILLs {self.kills}, "
                f"workers {self.workers} ({self.workers_killed} killed), "
                f"retry commands {self.retries}, duplicates {self.duplicates}, losses {self.losses}, "
                f"email copies re-sent with the same Message-ID {self.resent_same_message_id}")


def x_fault(rng: random.Random) -> tuple[str, Fault]:
    return rng.choice([
        ("x 503", XStandIn.server_error(503)), ("x html 502", Fault.html_502()),
        ("x dropped before", Fault.dropped()), ("x lost answer", Fault.lost_answer()),
        ("x slow answer", Fault.latency(0.6)), ("x 429", XStandIn.rate_limited(0)),
    ])


def graph_fault(rng: random.Random) -> tuple[str, Fault]:
    return rng.choice([
        ("graph throttled", GraphStandIn.throttled(rng.choice([4, 17, 32, 613]))),
        ("graph 500", GraphStandIn.server_error()), ("graph html 502", Fault.html_502()),
        ("graph dropped before", Fault.dropped()), ("graph lost answer", Fault.lost_answer()),
        ("graph slow answer", Fault.latency(0.6)),
    ])


def run_seed(seed: int, project: Project, figures: Figures) -> None:
    rng = random.Random(seed)
    with XStandIn() as x, GraphStandIn() as graph, SmtpStandIn() as smtp:
        project.write("""
            request_timeout_seconds = 0.3
            """ + BASE_SETTINGS.replace("max_wait_seconds = 5", "max_wait_seconds = 0.2") + f"""
            [channels.twitter]
            enabled = true
            api_base = "{x.url}"

            [channels.facebook]
            enabled = true
            page_id = "{graph.page_id}"
            api_base = "{graph.url}"

            [channels.email]
            enabled = true
            host = "127.0.0.1"
            port = {smtp.port}
            sender = "Status <status@example.com>"
            connections = 2

            [worker]
            batch = 2
            lease_seconds = 1
            poll_seconds = 0.1
            """, base="")
        env = {**os.environ, **DRILL_CREDENTIALS.environ(),
               "BROADCASTER_FACEBOOK_PAGE_TOKEN": DRILL_PAGE_TOKEN}
        (project.root / "s.csv").write_text("email\n" + "\n".join(SUBSCRIBERS) + "\n", encoding="utf-8")
        cli = [str(BIN / "broadcaster"), "--config", str(project.config)]
        subprocess.run([*cli, "subscribers", "import", str(project.root / "s.csv")], env=env, check=True,
                       capture_output=True, timeout=60)
        incident = ""
        for name, template in STEPS:
            for _ in range(rng.randint(0, 2)):
                label, fault = x_fault(rng)
                x.fail("create_tweet", fault)
                figures.faults[label] += 1
            for _ in range(rng.randint(0, 2)):
                label, fault = graph_fault(rng)
                graph.fail("create_post" if name == "announce" else "create_comment", fault)
                figures.faults[label] += 1
            if rng.random() < 0.4:
                refusal = rng.choice(["450 4.2.1 busy", "550 5.1.1 no such user"])
                smtp.refuse[rng.choice(SUBSCRIBERS)] = refusal
                figures.faults["smtp refused recipient"] += 1
            if rng.random() < 0.4:
                setattr(smtp, rng.choice(["drop_before_storing", "drop_after_storing"]), 1)
                figures.faults["smtp dropped connection"] += 1
            smtp.max_connections = None
            if rng.random() < 0.3:  # 421 past one connection, to the command and workers alike
                smtp.max_connections = 1
                figures.faults["smtp connection limit"] += 1
            args = [a.format(seed=seed, incident=incident) for a in template]
            text = args[args.index("--message") + 1]
            kill_after = rng.uniform(0.3, 1.6) if rng.random() < 0.3 else None
            workers = []
            for _ in range(rng.choice([0, 0, 1, 2])):
                workers.append((subprocess.Popen([*cli, "worker"], env=env, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL),
                                rng.uniform(0.5, 2.5) if rng.random() < 0.5 else None))
                figures.workers += 1
            started = time.monotonic()
            while True:
                process = subprocess.Popen([*cli, *args, "--yes"], env=env, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                try:
                    process.wait(timeout=kill_after or 120)
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    figures.kills += 1
                if recorded(project, text):
                    break  # killed before the update was recorded: a person runs it again
                kill_after = None
            if not incident:
                incident = incident_id(project)
            for worker, die_after in workers:  # killed at random, or stopped as an operator would
                if die_after is not None:
                    time.sleep(max(0.0, die_after - (time.monotonic() - started)))
                    worker.send_signal(signal.SIGKILL)
                    figures.workers_killed += 1
                else:
                    worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=120)
            for attempt in range(6):
                if attempt == 3:  # what a person does after reading the errors: fix, then retry
                    smtp.refuse.clear()
                    smtp.max_connections = None
                done = subprocess.run([*cli, "retry", incident, "--json"], env=env, capture_output=True,
                                      timeout=120)
                figures.retries += 1
                if done.returncode == 0:
                    break
            else:
                raise AssertionError(f"seed {seed}: retry never finished: {done.stdout[-1500:]!r}")
        check(seed, project, x, graph, smtp, figures)
    figures.runs += 1


def recorded(project: Project, message: str) -> bool:
    rows = project.rows("SELECT texts FROM updates")
    return any(json.loads(r[0])["en"]["message"] == message for r in rows)


def incident_id(project: Project) -> str:
    return project.rows("SELECT id FROM incidents")[0][0]


def check(seed: int, project: Project, x: XStandIn, graph: GraphStandIn, smtp: SmtpStandIn,
          figures: Figures) -> None:
    states = Counter(r[0] for r in project.rows("SELECT state FROM deliveries"))
    expected = 3 * (1 + 1 + 1 + len(SUBSCRIBERS))
    assert states == {"sent": expected}, f"seed {seed}: {states}"
    tweets = x.posted()
    texts = Counter(t.text for t in tweets)
    figures.duplicates += sum(n - 1 for n in texts.values())
    figures.losses += max(0, 3 - len(texts))
    assert len(tweets) == 3 and len(texts) == 3, f"seed {seed}: X has {[t.text for t in tweets]}"
    chain = x.thread(min(tweets, key=lambda t: int(t.id)).id)
    assert len(chain) == 3, f"seed {seed}: the X thread is broken"
    (post,) = graph.feed()
    comments = Counter(c.message for c in post.comments)
    figures.duplicates += sum(n - 1 for n in comments.values())
    assert len(post.comments) == 2 and len(comments) == 2, f"seed {seed}: Facebook comments {comments}"
    per_person = Counter((m.envelope_to[0], m["Subject"].split("]")[0]) for m in smtp.messages)
    ids = Counter(m["Message-ID"] for m in smtp.messages)
    figures.resent_same_message_id += sum(n - 1 for n in ids.values())
    distinct = Counter((m.envelope_to[0], m["Subject"].split("]")[0]) for m in
                       {m["Message-ID"]: m for m in smtp.messages}.values())
    figures.duplicates += sum(n - 1 for n in distinct.values())
    figures.losses += max(0, 3 * len(SUBSCRIBERS) - len(distinct))
    assert len(distinct) == 3 * len(SUBSCRIBERS) and set(distinct.values()) == {1}, \
        f"seed {seed}: emails {per_person}"


def test_a_handful_of_seeded_fault_runs(tmp_path_factory):
    figures = Figures()
    for seed in range(4):
        run_seed(seed, Project(tmp_path_factory.mktemp(f"seed{seed}")), figures)
    print("\nfault injection:", figures.line())
    assert figures.duplicates == 0 and figures.losses == 0


@pytest.mark.slow
def test_hundreds_of_seeded_fault_runs(tmp_path_factory):
    figures = Figures()
    count = int(os.environ.get("FAULT_SEEDS", "200"))
    started = time.monotonic()
    for seed in range(1000, 1000 + count):
        run_seed(seed, Project(tmp_path_factory.mktemp(f"seed{seed}")), figures)
    print(f"\nfault injection ({time.monotonic() - started:.0f} s):", figures.line())
    assert figures.duplicates == 0 and figures.losses == 0
