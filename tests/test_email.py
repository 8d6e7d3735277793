"""The email channel against a real SMTP server (aiosmtpd): headers, tokens, threads, faults."""

from __future__ import annotations

import itertools
import json
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
from conftest import EMAIL_SECTION, Inbox, Project

if TYPE_CHECKING:
    from broadcaster.channels.base import Post, Recipient
    from broadcaster.channels.email import EmailChannel

SUBSCRIBERS = """email,locale,components,regions
ana@example.com,es,,
bob@example.com,en,Payments API,
carl@example.com,en,Search,Madrid
"""


@pytest.fixture(params=["pipelining", "one command at a time"])
def inbox(request: pytest.FixtureRequest) -> Iterator[Inbox]:
    """Every test here runs against a server that offers PIPELINING and one that does not."""
    with Inbox() as box:
        box.pipelining = request.param == "pipelining"
        yield box


def subscribe(project: Project, rows: str = SUBSCRIBERS) -> None:
    (project.root / "subscribers.csv").write_text(rows, encoding="utf-8")
    result = project.cli("subscribers", "import", str(project.root / "subscribers.csv"))
    assert result.exit_code == 0, result.output


def announce(project: Project, *args: str) -> dict:
    result = project.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                         "--title-es", "Fallan los pagos", "--message-es", "Fallan los pagos con tarjeta.",
                         "--component", "Payments API", "--yes", "--json", *args)
    data = json.loads(result.stdout)
    data["exit_code"] = result.exit_code
    return data


def follow_up(project: Project, command: str, incident: str, *args: str) -> dict:
    extra = ("--status", "identified") if command == "update" else ()
    result = project.cli(command, incident, *extra, "--message", f"{command} text.", "--yes", "--json", *args)
    data = json.loads(result.stdout)
    data["exit_code"] = result.exit_code
    return data


def tokens(project: Project) -> dict[str, str]:
    return dict(project.rows("SELECT email, token FROM subscribers"))


def test_every_message_is_personal_multipart_and_says_how_to_leave(mailing: Project):
    subscribe(mailing)
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0, outcome
    inbox: Inbox = mailing.inbox
    assert sorted(m.envelope_to[0] for m in inbox.messages) == ["ana@example.com", "bob@example.com"]
    known = tokens(mailing)
    for message in inbox.messages:
        (address,) = message.envelope_to
        assert message["To"] == address
        token = known[address]
        https, mailto = [p.strip(" <>") for p in message["List-Unsubscribe"].split(",")]
        assert https == f"https://status.example.com/unsubscribe/{token}"
        assert mailto == f"mailto:status@example.com?subject=unsubscribe%20{token}"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Auto-Submitted"] == "auto-generated"
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        statement = outcome["statement_url"] if address == "bob@example.com" else \
            outcome["statement_url"].replace(".com/", ".com/es/")
        assert statement in text and statement in html
        assert https in text and https in html
        assert message["Content-Language"] == ("en" if address == "bob@example.com" else "es")
        assert max(len(line) for line in message.raw.splitlines()) <= 998
    spanish = inbox.to("ana@example.com")[0]
    # Where it stands, then the service (and place), then the title: what phones show first.
    assert spanish["Subject"] == "Investigando · Payments API: Fallan los pagos"
    assert "Fallan los pagos con tarjeta." in spanish.get_body(("plain",)).get_content()


def test_tokens_are_unique_unguessable_and_never_listed(mailing: Project):
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(50)))
    known = tokens(mailing)
    assert len(set(known.values())) == 50
    assert all(len(t) >= 32 for t in known.values())
    listed = mailing.cli("subscribers", "list", "--json").output
    assert not any(t in listed for t in known.values())


def test_later_emails_thread_under_each_subscribers_first(mailing: Project):
    subscribe(mailing)
    incident = announce(mailing)["incident_id"]
    follow_up(mailing, "update", incident)
    follow_up(mailing, "resolve", incident)
    for address in ("ana@example.com", "bob@example.com"):
        first, second, third = mailing.inbox.to(address)
        assert first["In-Reply-To"] is None and first["References"] is None
        for later in (second, third):
            assert later["In-Reply-To"] == first["Message-ID"] == later["References"]
        assert len({first["Message-ID"], second["Message-ID"], third["Message-ID"]}) == 3


def test_subscribers_get_only_what_concerns_them(mailing: Project):
    subscribe(mailing, SUBSCRIBERS + "dee@example.com,en,,Madrid\n")
    announce(mailing, "--region", "Madrid")
    got = sorted(m.envelope_to[0] for m in mailing.inbox.messages)
    # Payments API in Madrid: ana follows everything, bob Payments API anywhere, dee everything
    # in Madrid; carl follows Search in Madrid, which this is not.
    assert got == ["ana@example.com", "bob@example.com", "dee@example.com"]
    mailing.inbox.messages.clear()
    result = mailing.cli("announce", "--title", "Search slow", "--message", "Slow.", "--component",
                         "Search", "--yes")
    assert result.exit_code == 0
    # Search everywhere: not bob's service; carl's service in his place; dee's place (all services).
    assert sorted(m.envelope_to[0] for m in mailing.inbox.messages) == [
        "ana@example.com", "carl@example.com", "dee@example.com"]


def test_a_refused_recipient_fails_alone_and_retry_emails_each_person_once(mailing: Project):
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(20)))
    mailing.inbox.refuse["user7@example.com"] = "550 5.1.1 no such user"
    mailing.inbox.refuse["user3@example.com"] = "450 4.2.1 mailbox busy"
    outcome = announce(mailing)
    assert outcome["exit_code"] == 3
    states = {d["recipient"]: d for d in outcome["deliveries"] if d.get("recipient")}
    assert set(states) == {"user7@example.com", "user3@example.com"}, "only those still to do are listed"
    email = next(d for d in outcome["deliveries"] if d["channel"] == "email" and "recipients" in d)
    assert email["status"] == "failed" and email["recipients"] == {"sent": 18, "failed": 2}
    assert states["user7@example.com"]["status"] == "failed"
    assert "550" in states["user7@example.com"]["error"] and states["user7@example.com"]["attempts"] == 1
    assert states["user3@example.com"]["status"] == "failed"
    assert states["user3@example.com"]["attempts"] == 3, "a 4xx is retried until attempts run out"
    assert len(mailing.inbox.messages) == 18
    mailing.inbox.refuse.clear()
    done = mailing.cli("retry", outcome["incident_id"], "--json")
    assert done.exit_code == 0, done.output
    assert len(mailing.inbox.messages) == 20
    assert sorted(a for m in mailing.inbox.messages for a in m.envelope_to) == sorted(
        f"user{n}@example.com" for n in range(20)), "nobody twice, nobody missed"
    assert mailing.cli("retry", "--json").exit_code == 0
    assert len(mailing.inbox.messages) == 20


def test_a_channel_that_breaks_half_way_keeps_what_it_sent_and_retry_sends_the_rest(
        mailing: Project, monkeypatch: pytest.MonkeyPatch):
    """A bug in the channel after some messages went out fails the rest of the batch, never
    those already recorded sent (`retry` would email them twice)."""
    from broadcaster.channels.email import EmailChannel

    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(12)))
    outcome_of = EmailChannel._outcome
    seen: list[str] = []

    def breaks(self, recipient, refusal, receipts):
        seen.append(recipient.address)
        if len(seen) > 5:
            raise RuntimeError("a bug in the channel")
        return outcome_of(self, recipient, refusal, receipts)

    monkeypatch.setattr(EmailChannel, "_outcome", breaks)
    outcome = announce(mailing)
    email = next(d for d in outcome["deliveries"] if d["channel"] == "email" and "recipients" in d)
    sent = email["recipients"]["sent"]
    assert 0 < sent < 12 and email["recipients"]["failed"] == 12 - sent
    monkeypatch.setattr(EmailChannel, "_outcome", outcome_of)
    before = len(mailing.inbox.messages)
    assert mailing.cli("retry", outcome["incident_id"], "--json").exit_code == 0
    assert len(mailing.inbox.messages) - before == 12 - sent, "retry sends only what was not recorded sent"
    everyone = {f"user{n}@example.com" for n in range(12)}
    assert {a for m in mailing.inbox.messages for a in m.envelope_to} == everyone


def test_a_line_that_starts_with_a_dot_arrives_as_written(mailing: Project):
    """The prepared message is dot-stuffed once, on the template: every copy arrives with the
    line as written (neither the dot lost nor doubled)."""
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(3)))
    outcome = announce(mailing, "--message", "Card payments fail.\n\n.NET clients time out.")
    assert outcome["exit_code"] == 0
    english = [m for m in mailing.inbox.messages if m["Content-Language"] == "en"]
    assert english
    for m in english:
        text = m.get_body(("plain",)).get_content()
        assert "\n.NET clients time out." in text and "..NET" not in text


def test_a_dropped_connection_is_reopened_and_the_batch_goes_on(mailing: Project):
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(30)))
    mailing.inbox.drop_before_storing = 2
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0, outcome
    assert sorted(a for m in mailing.inbox.messages for a in m.envelope_to) == sorted(
        f"user{n}@example.com" for n in range(30))


def test_a_resent_copy_after_a_lost_answer_keeps_its_message_id(mailing: Project):
    subscribe(mailing, "email\nana@example.com\n")
    mailing.inbox.drop_after_storing = 1
    announce(mailing)
    first, again = mailing.inbox.messages
    assert first["Message-ID"] == again["Message-ID"], "mail programs show such copies once"


def test_someone_who_leaves_before_a_retry_is_skipped(mailing: Project):
    subscribe(mailing, "email\nana@example.com\nbob@example.com\n")
    mailing.inbox.refuse["bob@example.com"] = "451 4.3.0 try later"
    outcome = announce(mailing)
    assert outcome["exit_code"] == 3
    assert mailing.cli("subscribers", "remove", "bob@example.com").exit_code == 0
    mailing.inbox.refuse.clear()
    before = mailing.cli("show", outcome["incident_id"], "--recipients", "--json")
    tried = {r["recipient"]: r["attempts"] for r in map(json.loads, before.stdout.splitlines())}
    done = json.loads(mailing.cli("retry", outcome["incident_id"], "--json").stdout)
    assert done["recipients"]["email"] == {"sent": 1, "skipped": 1}
    assert not [d for d in done["deliveries"] if d.get("recipient")], "only recipients still to do are listed"
    listed = mailing.cli("show", outcome["incident_id"], "--recipients", "--json")
    rows = {r["recipient"]: r for r in map(json.loads, listed.stdout.splitlines())}
    bob = rows["bob@example.com"]
    assert bob["status"] == "skipped" and "unsubscribed" in bob["error"]
    assert bob["attempts"] == tried["bob@example.com"] > 0, "the retry's claim of bob is no attempt"
    assert rows["ana@example.com"]["status"] == "sent"
    assert [m.envelope_to for m in mailing.inbox.messages] == [["ana@example.com"]]


def test_bad_rows_are_reported_by_line_and_good_rows_kept(mailing: Project):
    rows = ("email,locale,components,regions\nana@example.com,es,,\nnot-an-address,,,\n"
            "bob@example.com,fr,,\nana@example.com,en,,\ncarl@example.com,,Payments API;Checkout,\n")
    (mailing.root / "list.csv").write_text(rows, encoding="utf-8")
    result = mailing.cli("subscribers", "import", str(mailing.root / "list.csv"))
    assert result.exit_code == 2
    assert "list.csv:3: 'not-an-address' is not a valid email address" in result.output
    assert "list.csv:4: locale 'fr'" in result.output
    assert "list.csv:5: ana@example.com is already on line 2" in result.output
    listed = json.loads(mailing.cli("subscribers", "list", "--json").stdout)
    assert [(s["email"], s["locale"], s["components"]) for s in listed] == [
        ("ana@example.com", "es", []), ("carl@example.com", "en", ["Payments API", "Checkout"])]


def test_an_import_never_signs_up_again_someone_who_left(mailing: Project):
    subscribe(mailing, "email\nana@example.com\n")
    assert mailing.cli("subscribers", "remove", "ana@example.com").exit_code == 0
    again = mailing.cli("subscribers", "import", str(mailing.root / "subscribers.csv"))
    assert "stay unsubscribed" in again.output
    assert json.loads(mailing.cli("subscribers", "list", "--json").stdout)[0]["active"] is False
    assert mailing.cli("subscribers", "add", "ana@example.com").exit_code == 0
    assert json.loads(mailing.cli("subscribers", "list", "--json").stdout)[0]["active"] is True
    assert mailing.cli("subscribers", "remove", "nobody@example.com").exit_code == 2


def test_the_default_csv_is_the_configured_one(mailing: Project):
    (mailing.root / "subscribers.csv").write_text("email\nana@example.com\n", encoding="utf-8")
    result = mailing.cli("subscribers", "import")
    assert result.exit_code == 0 and "1 added" in result.output, result.output


def test_nobody_following_is_a_warning_not_an_error(mailing: Project):
    result = mailing.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 0
    assert "no subscriber follows" in result.output


def test_a_larger_list_over_parallel_connections_is_delivered_once_each(project: Project, inbox: Inbox):
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=4))
    subscribe(project, "email\n" + "".join(f"u{n}@example.com\n" for n in range(400)))
    outcome = announce(project)
    assert outcome["exit_code"] == 0 and outcome["recipients"]["email"] == {"sent": 400}
    addresses = [a for m in inbox.messages for a in m.envelope_to]
    assert len(addresses) == 400 and len(set(addresses)) == 400
    assert len({m["Message-ID"] for m in inbox.messages}) == 400


@contextmanager
def logging_in(project: Project, monkeypatch: pytest.MonkeyPatch, check: Callable[..., object],
               password: str) -> Iterator[Inbox]:
    """A server that asks for a login (`check` judges it), ana subscribed, and the login in the
    environment as user `status` with `password`."""
    with Inbox().start(authenticator=check, auth_require_tls=False) as box:
        project.write(EMAIL_SECTION.format(port=box.port, connections=1))
        subscribe(project, "email\nana@example.com\n")
        monkeypatch.setenv("BROADCASTER_SMTP_USERNAME", "status")
        monkeypatch.setenv("BROADCASTER_SMTP_PASSWORD", password)
        yield box


def test_smtp_login_uses_the_environment_and_a_refusal_names_the_variables(project: Project, monkeypatch):
    from aiosmtpd.smtp import AuthResult

    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"status" and auth_data.password == b"s3cret-pw"
        return AuthResult(success=ok, handled=False)

    with logging_in(project, monkeypatch, check, "wrong-pw-123") as box:
        outcome = announce(project)
        error = next(d["error"] for d in outcome["deliveries"] if d["channel"] == "email")
        assert "BROADCASTER_SMTP_PASSWORD" in error and "wrong-pw-123" not in json.dumps(outcome)
        monkeypatch.setenv("BROADCASTER_SMTP_PASSWORD", "s3cret-pw")
        assert project.cli("retry", "--json").exit_code == 0
        assert len(box.messages) == 1


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is needed to make a test certificate")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_starttls_and_tls_verify_the_server(project: Project, tmp_path, security: str):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    extra = {"tls_context": context, "require_starttls": True} if security == "starttls" else \
        {"ssl_context": context}
    with Inbox().start(**extra) as box:
        section = EMAIL_SECTION.format(port=box.port, connections=1) + f'security = "{security}"\n'
        project.write(section)
        subscribe(project, "email\nana@example.com\n")
        untrusted = announce(project)
        error = next(d["error"] for d in untrusted["deliveries"] if d["channel"] == "email")
        assert "TLS" in error and "CERTIFICATE_VERIFY_FAILED" in error
        project.write(section + f'ca_file = "{cert}"\n')
        assert project.cli("retry", "--json").exit_code == 0
        assert len(box.messages) == 1


@pytest.mark.sqlite_only
def test_a_ledger_from_before_subscribers_is_migrated(project: Project):
    import sqlite3

    incident = project.announce()
    db = sqlite3.connect(project.state / "ledger.db")
    from broadcaster.ledger.sqlite import SCHEMA_VERSION

    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0] == 0
    assert project.cli("show", incident).exit_code == 0


def test_store_keeps_tokens_across_updates(mailing: Project):
    subscribe(mailing, "email,locale\nana@example.com,en\n")
    before = tokens(mailing)
    subscribe(mailing, "email,locale\nana@example.com,es\n")
    assert tokens(mailing) == before
    from broadcaster.ledger import open_ledger
    from broadcaster.settings import load_settings

    with open_ledger(load_settings(mailing.config), read_only=True) as ledger:
        (ana,) = list(ledger.each_subscriber(active_only=True))
    assert ana.locale == "es"


def test_long_fan_outs_report_progress(mailing: Project):
    import io
    import itertools

    from broadcaster.progress import reporter, terminal_bar

    subscribe(mailing, "email\n" + "".join(f"p{n}@example.com\n" for n in range(150)))
    seen: list[tuple[str, int, int]] = []
    stream = io.StringIO()
    draw = terminal_bar(minimum=100, stream=stream)
    token = reporter.set(lambda *args: (seen.append(args), draw(*args)))
    try:
        assert announce(mailing)["exit_code"] == 0
    finally:
        reporter.reset(token)
    assert seen[-1] == ("email", 150, 150)
    done = [done for _, done, _ in seen]
    # Results recorded together move the bar together: at most one per connection (two here).
    assert all(0 < b - a <= 2 for a, b in itertools.pairwise([0, *done]))
    assert "email" in stream.getvalue(), "the bar is drawn"


def test_a_whole_list_that_failed_is_finished_by_one_retry(mailing: Project):
    addresses = [f"r{n}@example.com" for n in range(300)]
    subscribe(mailing, "email\n" + "\n".join(addresses) + "\n")
    mailing.inbox.refuse.update({a: "451 4.3.2 system not accepting messages" for a in addresses})
    outcome = announce(mailing)
    assert outcome["exit_code"] == 3 and outcome["recipients"]["email"] == {"failed": 300}
    mailing.inbox.refuse.clear()
    done = json.loads(mailing.cli("retry", outcome["incident_id"], "--json").stdout)
    assert done["recipients"]["email"] == {"sent": 300}
    assert sorted(a for m in mailing.inbox.messages for a in m.envelope_to) == sorted(addresses)


def test_a_message_refused_at_data_fails_for_that_recipient_only(mailing: Project):
    subscribe(mailing, "email\nana@example.com\nbob@example.com\n")
    mailing.inbox.refuse_data["bob@example.com"] = "554 5.7.1 message rejected as spam"
    outcome = announce(mailing)
    bob = next(d for d in outcome["deliveries"] if d.get("recipient") == "bob@example.com")
    assert outcome["exit_code"] == 3 and bob["status"] == "failed" and "554" in bob["error"]
    assert bob["attempts"] == 1, "a 5xx is not retried"
    assert [m.envelope_to for m in mailing.inbox.messages] == [["ana@example.com"]]


def test_starttls_required_but_not_offered_is_a_clear_permanent_error(mailing: Project):
    mailing.write(EMAIL_SECTION.format(port=mailing.inbox.port, connections=1) + 'security = "starttls"\n')
    subscribe(mailing, "email\nana@example.com\n")
    outcome = announce(mailing)
    error = next(d["error"] for d in outcome["deliveries"] if d["channel"] == "email")
    assert "does not offer STARTTLS" in error and mailing.inbox.messages == []


def test_a_line_too_long_for_smtp_is_refused_before_anything_is_sent(mailing: Project):
    subscribe(mailing, "email\nana@example.com\n")
    result = mailing.cli("announce", "--title", "T", "--message", "x" * 1200, "--yes")
    assert result.exit_code == 2 and "SMTP allows 998" in result.output
    assert mailing.inbox.messages == [] and not mailing.public.exists()


def test_show_counts_a_list_and_streams_every_recipient_on_request(mailing: Project):
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(12)))
    mailing.inbox.refuse["user5@example.com"] = "550 5.1.1 no such user"
    outcome = announce(mailing)
    shown = json.loads(mailing.cli("show", outcome["incident_id"], "--json").stdout)
    (update,) = shown["updates"]
    assert update["recipients"] == {"email": {"sent": 11, "failed": 1}}
    assert [d.get("recipient") for d in update["deliveries"]] == [None, None, "user5@example.com"]
    text = mailing.cli("show", outcome["incident_id"]).stdout
    assert "12 recipients: 1 failed, 11 sent" in text and "user5@example.com" in text
    assert "user6@example.com" not in text, "a sent recipient is counted, not listed"
    listed = mailing.cli("show", outcome["incident_id"], "--recipients")
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == ["UPDATE_ID", "CHANNEL", "LOCALE", "RECIPIENT", "STATUS", "ATTEMPTS",
                                  "ERROR"]
    assert sorted(r.split("\t")[3] for r in rows) == sorted(f"user{n}@example.com" for n in range(12))
    as_json = [json.loads(line) for line in
               mailing.cli("show", outcome["incident_id"], "--recipients", "--json").stdout.splitlines()]
    assert {r["recipient"]: r["status"] for r in as_json}["user5@example.com"] == "failed"
    assert len(as_json) == 12
    unknown = mailing.cli("show", "zzzzzzzzzz", "--recipients")
    assert unknown.exit_code == 2 and unknown.stdout == ""
    # A ledger written before channel kinds were kept: the channels tell which are lists.
    from broadcaster.ledger import open_ledger
    from broadcaster.settings import load_settings

    with open_ledger(load_settings(mailing.config)) as ledger, ledger.transaction() as db:
        db.execute("DELETE FROM channel_kinds")
    again = json.loads(mailing.cli("show", outcome["incident_id"], "--json").stdout)
    assert again["updates"][0]["recipients"] == {"email": {"sent": 11, "failed": 1}}


def test_an_import_goes_a_batch_at_a_time_and_names_duplicates_across_batches(
        mailing: Project, monkeypatch: pytest.MonkeyPatch):
    from broadcaster import subscribers

    monkeypatch.setattr(subscribers, "IMPORT_BATCH", 3)
    rows = "email\n" + "".join(f"user{n}@example.com\n" for n in range(10)) + "User2@Example.com\nbad\n"
    (mailing.root / "list.csv").write_text(rows, encoding="utf-8")
    result = mailing.cli("subscribers", "import", str(mailing.root / "list.csv"), "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 2 and report["added"] == 10
    assert report["problems"][0].endswith(
        "list.csv:12: user2@example.com is already on line 4; kept that one")
    assert "list.csv:13:" in report["problems"][1]
    assert len(mailing.rows("SELECT email FROM subscribers")) == 10


def test_a_file_of_bad_rows_names_the_first_thousand_and_counts_the_rest(
        mailing: Project, monkeypatch: pytest.MonkeyPatch):
    from broadcaster import subscribers

    monkeypatch.setattr(subscribers, "IMPORT_BATCH", 7)  # refused rows are counted across batches too
    monkeypatch.setattr(subscribers, "PROBLEMS_LISTED", 10)
    rows = "email\n" + "".join(f"not-an-address-{n}\n" for n in range(25)) + "ana@example.com\n"
    (mailing.root / "list.csv").write_text(rows, encoding="utf-8")
    report = json.loads(mailing.cli("subscribers", "import", str(mailing.root / "list.csv"), "--json").stdout)
    assert report["exit_code"] == 2 and report["added"] == 1 and report["refused_count"] == 25
    assert [p.split(":")[1] for p in report["problems"]] == [str(n) for n in range(2, 12)]
    text = mailing.cli("subscribers", "import", str(mailing.root / "list.csv"))
    assert text.exit_code == 2
    assert "25 rows refused; the others were imported:" in text.output
    assert "list.csv:11:" in text.output and "list.csv:12:" not in text.output
    assert "… and 15 more, not listed (fix these and import again to see them)" in text.output


def _parse_peaks(project: Project, script: str) -> tuple[int, int]:
    """What `script` prints (the parser's peak for 2,000 rows, then 20,000), measured in a
    process of its own after a first small parse: tracemalloc counts every thread's allocations
    (a thread an earlier test left behind once added 10 MB to the larger file's window), and the
    first parse's one-time set-up (3.8 MB) would fall in the smaller file's window, where it hid
    a dict of every address (2.5 MB at 20,000). `script` gets the settings file and a folder."""
    head = """
import sys, tracemalloc
from pathlib import Path
from broadcaster import subscribers
from broadcaster.settings import load_settings

settings = load_settings(Path(sys.argv[1]))
"""
    done = subprocess.run([sys.executable, "-c", head + script, str(project.config), str(project.root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    small, large = map(int, done.stdout.split())
    return small, large


def test_naming_duplicates_holds_no_python_object_per_address(project: Project):
    """The lines that name duplicates are kept in a temporary database, not a dict: what the
    parser holds does not grow with the file (a dict grew about 100 bytes an address)."""
    small, large = _parse_peaks(project, """
def peak(rows):
    path = Path(sys.argv[2]) / f"list-{rows}.csv"
    path.write_text("".join(f"user{n}@example.com\\n" for n in range(rows)) + "user7@example.com\\n",
                    encoding="utf-8")
    good, named = 0, []
    tracemalloc.start()
    for batch, problems in subscribers.parse_csv(path, settings, batch=500):
        good, named = good + len(batch), named + problems
    most = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert good == rows, good
    assert named == [f"{path}:{rows + 1}: user7@example.com is already on line 8; kept that one"], named
    return most

peak(10)  # what the first parse sets up once (the address checker's tables) is not the file's
print(peak(2_000), peak(20_000))
""")
    assert large - small < 500_000, f"{small:,} bytes for 2,000 addresses, {large:,} for 20,000"


def test_a_file_of_bad_rows_is_read_in_batches_too(project: Project):
    """Refused rows leave the parser a batch at a time, like good ones: a file in the wrong
    format (every row refused) does not pile up a message per row before the import sees it.
    Measured apart (`_parse_peaks`): run in the test's process, a thread left by an earlier
    test once put 10 MB into the larger file's window."""
    small, large = _parse_peaks(project, """
def peak(rows):
    path = Path(sys.argv[2]) / f"bad-{rows}.csv"
    path.write_text("".join(f"not-an-address-{n}\\n" for n in range(rows)), encoding="utf-8")
    refused = 0
    tracemalloc.start()
    for good, problems in subscribers.parse_csv(path, settings, batch=500):
        refused += len(problems) + len(good)
    most = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert refused == rows, refused
    return most

peak(10)
print(peak(2_000), peak(20_000))
""")
    assert large - small < 500_000, f"{small:,} bytes for 2,000 bad rows, {large:,} for 20,000"


def test_a_list_that_is_not_utf8_is_refused_by_line_before_anything_is_imported(mailing: Project):
    (mailing.root / "list.csv").write_bytes(b"email\nana@example.com\njos\xe9@example.com\n")
    result = mailing.cli("subscribers", "import", str(mailing.root / "list.csv"))
    assert result.exit_code == 2
    assert "list.csv:3: not UTF-8 text" in result.output and "save the list as UTF-8" in result.output
    assert not (mailing.root / "state" / "ledger.db").exists(), "nothing imported, no ledger made"


def test_a_long_import_reports_its_progress(mailing: Project, monkeypatch: pytest.MonkeyPatch):
    from broadcaster import api, subscribers
    from broadcaster.progress import reporter

    monkeypatch.setattr(subscribers, "IMPORT_BATCH", 4)
    (mailing.root / "list.csv").write_text("email\n" + "".join(f"u{n}@example.com\n" for n in range(10)),
                                           encoding="utf-8")
    seen: list[tuple[str, int, int]] = []
    token = reporter.set(lambda what, done, total: seen.append((what, done, total)))
    try:
        api.import_subscribers(mailing.root / "list.csv", settings=mailing.config)
    finally:
        reporter.reset(token)
    assert seen == [("subscribers", 5, 11), ("subscribers", 9, 11), ("subscribers", 11, 11),
                    ("subscribers", 11, 11)]


def test_connections_are_kept_from_one_batch_to_the_next(mailing: Project, inbox: Inbox):
    """Each batch of a mailing list used to open (and log into) its connections again; they
    are kept for the next batch, checked with RSET first, and closed when the fan-out ends."""
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=2) + "[worker]\nbatch = 3\n")
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(12)))
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0 and len(inbox.messages) == 12
    assert inbox.greetings == 2, "four batches of three over the same two connections"


def test_connections_are_opened_at_once_not_one_after_another(mailing: Project, inbox: Inbox):
    """Opening a connection costs round trips (greeting, EHLO, STARTTLS, AUTH): the four of a
    fan-out are opened together, so the server answers their EHLOs at the same time."""
    inbox.ehlo_delay = 0.3
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=4))
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(8)))
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0 and len(inbox.messages) == 8
    assert inbox.greetings == 4
    assert inbox.most_greeting_at_once >= 2, "opened one after another, one EHLO at a time"


def test_a_relay_that_takes_fewer_connections_gets_the_whole_list_over_those_it_took(mailing: Project,
                                                                                    inbox: Inbox):
    """A relay at its limit of connections from one client answers 421 where its greeting goes
    (Postfix's smtpd_client_connection_count_limit). The shares of the refused connections
    used to wait a backoff for another round, and every batch asked the relay for five again
    (twelve connections refused for eighteen messages here). Now the list goes over the
    connections the relay took, each later batch asks for one more, and the person is told
    once what to set."""
    inbox.max_connections = 2
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=5) + "[worker]\nbatch = 6\n")
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(18)))
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0, outcome
    assert outcome["recipients"]["email"] == {"sent": 18}
    addresses = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert addresses == sorted(f"user{n}@example.com" for n in range(18)), "each once"
    assert inbox.refused_connections == 5, "five, then three, then three"
    assert inbox.greetings == 2, "the two it took, kept for the later batches"
    (said,) = [w for w in outcome["warnings"] if w.startswith("email: ")]
    assert "only 2 of the 5 SMTP connections asked for were opened" in said
    assert "turned the connection away: 421" in said and "connections = 2" in said


def test_a_relay_that_limits_how_fast_a_client_sends_is_sent_to_at_its_rate_and_refuses_none(
        mailing: Project, inbox: Inbox):
    """A relay that takes so many messages a second from a client (Amazon SES's maximum send
    rate) answers the rest 454 after their text. With `rate` the texts are spaced over every
    connection, no more connections are opened than it takes a second, and none is refused.
    The relay here takes 5 in any 0.2 s, so only a burst (or a stall of most of a second on
    this machine) would be refused; the span is a bound the pacing guarantees."""
    import time

    inbox.max_rate = (5, 0.2)
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=16) + "rate = 5\n")
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(8)))
    began = time.monotonic()
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0 and outcome["recipients"]["email"] == {"sent": 8}, outcome
    assert inbox.throttled == 0 and not [w for w in outcome["warnings"] if w.startswith("email: ")]
    assert inbox.taken_at[-1] - began >= 7 / 5, "8 at 5 a second span at least 1.4 s"
    assert inbox.greetings <= 5, "no more connections than messages a second"
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == [f"user{n}@example.com" for n in range(8)], "each once"


def test_without_a_rate_a_relay_that_puts_messages_off_gets_them_at_the_pace_it_takes(mailing: Project,
                                                                                      inbox: Inbox):
    """No `rate` set, a relay that takes 20 a second (10 in any half second, as SES's maximum
    send rate) and answers the rest 454. Before, every round went at full speed and only the
    relay's burst got through: 20 of 400 were sent and the rest failed after three rounds.
    Now the pace slows to what the relay takes once it puts messages off, the few put off go
    round again, and everyone gets the message once."""
    inbox.max_rate = (10, 0.5)
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=16))
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(60)))
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0 and outcome["recipients"]["email"] == {"sent": 60}, outcome
    assert 0 < inbox.throttled < 30, inbox.throttled
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == sorted(f"user{n}@example.com" for n in range(60)), "each once"
    (said,) = [w for w in outcome["warnings"] if w.startswith("email: ")]
    assert f"put off {inbox.throttled} messages for coming too fast (454 Throttling failure" in said
    assert "sending slowed to what it took, and they went round again or are left for `retry`" in said
    assert "set [channels.email] rate to the messages a second it takes" in said


def test_a_small_batch_put_off_for_the_rest_of_the_relays_minute_waits_for_it_without_spending_attempts(
        mailing: Project, inbox: Inbox):
    """A relay that counts by the minute (Postfix's anvil, Exchange Online) refuses everything
    for the rest of its minute once its burst is spent. Rounds of a batch went on meanwhile and
    spent the attempts: against 600 a minute, batches of 150 left 150 to 300 of 1,500 failed
    for `retry` while later batches were sent. Now a round whose recipients were only put off
    for coming too fast spends no attempt while the batch began, or the relay took one of its
    messages, within `PUT_OFF_PATIENCE`. Here the relay takes 5 in any 3 s (its "minute"), and
    the three attempts, with no wait between them, are spent long before 3 s pass. (How many
    rounds a batch takes is not asserted: it depends on how long each took on this machine.)"""
    inbox.max_rate = (5, 3.0)
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=2) + "[worker]\nbatch = 3\n")
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(12)))
    outcome = announce(mailing)
    assert outcome["exit_code"] == 0 and outcome["recipients"]["email"] == {"sent": 12}, outcome
    assert inbox.throttled > 0, "the relay put some off: what this is about"
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == sorted(f"user{n}@example.com" for n in range(12)), "each once"


@pytest.mark.parametrize("rate, advice", [(None, "set [channels.email] rate"),
                                         (100, "lower [channels.email] rate (now 100)")])
def test_messages_put_off_for_coming_too_fast_go_round_again_and_the_warning_says_to_set_rate(
        mailing: Project, inbox: Inbox, rate: int | None, advice: str, monkeypatch: pytest.MonkeyPatch):
    """Without `rate` (or with one the relay does not take), a relay that limits how fast a
    client sends puts the excess off (454): those go round again, and what is still put off
    once the relay has taken nothing for `PUT_OFF_PATIENCE` (a second here, a minute and a
    half by default) and the attempts run out is left for `retry`. The command says why and
    what to set, in the relay's words."""
    from broadcaster import defaults

    monkeypatch.setattr(defaults, "PUT_OFF_PATIENCE", 1.0)
    if rate:
        mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=2) + f"rate = {rate}\n")
    inbox.max_rate = (2, 3600.0)  # two an hour: every round after the first two is put off
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(4)))
    outcome = announce(mailing)
    assert outcome["exit_code"] == 3 and outcome["recipients"]["email"] == {"sent": 2, "failed": 2}, outcome
    assert inbox.throttled >= 2 * 3, "two recipients, three attempts each once the patience ran out"
    (said,) = [w for w in outcome["warnings"] if w.startswith("email: ")]
    assert (f"put off {inbox.throttled} messages for coming too fast (454 Throttling failure: Maximum "
            "sending rate") in said
    assert advice in said
    attempts = mailing.rows("SELECT attempts FROM deliveries WHERE channel = 'email' AND state = 'failed'")
    assert all(a >= 3 for (a,) in attempts), attempts
    failed = mailing.rows("SELECT error FROM deliveries WHERE channel = 'email' AND state = 'failed'")
    assert all("454 Throttling failure" in e for (e,) in failed), failed

    inbox.max_rate = None
    assert mailing.cli("retry", "--json").exit_code == 0
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == [f"user{n}@example.com" for n in range(4)], "each once"


@pytest.mark.parametrize("value, says", [("0", "greater than 0"), ("-14", "greater than 0"),
                                          ('"fast"', "valid number"), ("inf", "finite number")])
def test_a_rate_that_is_not_a_positive_number_is_refused_before_anything_goes(
        mailing: Project, inbox: Inbox, value: str, says: str):
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=2) + f"rate = {value}\n")
    result = mailing.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                                   "--yes", "--json")
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    line = mailing.config.read_text().splitlines().index(f"rate = {value}") + 1
    assert f"{mailing.config}:{line}: channels.email.rate" in error and says in error, error
    assert inbox.messages == [] and mailing.rows("SELECT id FROM incidents") == []


def test_the_preview_says_how_long_a_paced_list_takes_when_it_is_more_than_a_minute(mailing: Project,
                                                                                       inbox: Inbox):
    """At a relay's rate a large list takes long (a million at 14 a second: most of a day);
    whoever sends it hears so before they confirm. Not said when it takes under a minute."""
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(150)))
    for rate, says in ((2, "email: 150 recipients at 2 a second ([channels.email] rate) take about 1 min "
                           "to send"), (0.5, "take about 5 min to send"), (14, None)):
        mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=2) + f"rate = {rate}\n")
        outcome = announce(mailing, "--dry-run")
        assert outcome["exit_code"] == 0, outcome
        paced = [w for w in outcome["warnings"] if "a second ([channels.email] rate)" in w]
        if says is None:
            assert paced == []
        else:
            assert len(paced) == 1 and says in paced[0], paced
    assert inbox.messages == []


def test_the_preview_shows_where_each_subscriber_s_own_link_goes_in_words(mailing: Project):
    """Each copy carries its subscriber's own unsubscribe and preferences links; the preview
    (text and JSON) shows them as the URL settings write them, not the placeholder each copy
    fills in, which read like a token nobody had."""
    from broadcaster.channels import email as email_channel

    subscribe(mailing)
    shown = mailing.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                        "--dry-run")
    assert shown.exit_code == 0, shown.output
    outcome = announce(mailing, "--dry-run")
    (planned, *_) = [p for p in outcome["preview"] if p["channel"] == "email"]
    for text in (shown.output, planned["text"]):
        assert "https://status.example.com/unsubscribe/{token}" in text, text
        assert "https://status.example.com/preferences/{token}" in text
        assert email_channel.TOKEN not in text and "BROADCASTER-TOKEN" not in text
    assert mailing.inbox.messages == []


@pytest.mark.parametrize("host, rate, says", [
    ("email-smtp.eu-west-1.amazonaws.com", None, "Amazon SES takes at most your account's maximum send rate"),
    ("smtp.office365.com", None, "Exchange Online takes 30 messages a minute from a mailbox"),
    ("email-smtp.eu-west-1.amazonaws.com", 14, None),
    ("127.0.0.1", None, None),
])
def test_a_relay_known_to_limit_its_rate_is_named_before_anything_goes_when_rate_is_unset(
        project: Project, host: str, rate: float | None, says: str | None):
    """Amazon SES and Exchange Online refuse what comes faster than they take: the preview
    says so, and what to set, before anyone confirms (nothing is contacted for a preview)."""
    section = EMAIL_SECTION.format(port=25, connections=2).replace('"127.0.0.1"', f'"{host}"')
    project.write(section + (f"rate = {rate}\n" if rate else ""))
    subscribe(project)
    outcome = announce(project, "--dry-run")
    assert outcome["exit_code"] == 0, outcome
    named = [w for w in outcome["warnings"] if w.startswith(f"email: {host}: ")]
    if says is None:
        assert named == [], named
    else:
        assert len(named) == 1 and says in named[0] and "set [channels.email] rate" in named[0], named


def test_a_daily_quota_is_not_taken_for_a_rate():
    """SES words its daily quota as it words its rate ("454 Throttling failure: Daily message
    quota exceeded"); spacing the messages would not help it, so the warning does not say so."""
    from broadcaster.channels.email import _TOO_FAST

    assert _TOO_FAST.search("Throttling failure: Maximum sending rate exceeded")
    assert _TOO_FAST.search("4.7.1 Error: too much mail from 192.0.2.1")
    assert not _TOO_FAST.search("Throttling failure: Daily message quota exceeded")
    assert not _TOO_FAST.search("4.2.2 Mailbox full")


def test_connections_refused_for_a_moment_are_asked_for_again_batch_by_batch(mailing: Project, inbox: Inbox):
    """A relay that refused most connections for a moment (restarting, a burst from another
    client) used to leave the rest of the fan-out, a million recipients perhaps, on the few
    that opened. The next batch now asks for one more, and each that opens every connection
    it asks for asks for more again (one, two, four... more), up to `connections`; the
    warning is said once."""
    channel = email_channel(mailing, inbox.port, 4)
    post = a_post()
    results: list[object] = []

    def send(first: int) -> int:
        batch = people(range(first, first + 8))
        channel.send_batch(post, batch, lambda settled: results.extend(r for _, r in settled))
        return len(channel._kept)

    inbox.max_connections = 1
    assert send(0) == 1 and inbox.refused_connections == 3
    inbox.max_connections = None  # the relay takes them all again
    assert [send(8), send(16)] == [2, 4], "1 + 1, then 2 + 2"
    assert send(24) == 4 and inbox.greetings == 4, "never more than `connections`"
    (said,) = channel.said()
    assert "only 1 of the 4 SMTP connections asked for were opened" in said and "connections = 1" in said
    assert channel.said() == [], "said once"
    channel.batches_done()
    assert [type(r).__name__ for r in results] == ["Receipt"] * 32
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == sorted(f"p{n}@example.com" for n in range(32)), "each once"


def test_within_a_batch_connections_are_asked_for_again_a_slice_at_a_time(mailing: Project, inbox: Inbox,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """A whole batch (5,000) used to go over the connections the first open got: one
    connection to a relay 20 ms away is 100 s. After a refusal the batch now goes a slice at a
    time, asking for more between slices, until it has them all; at a relay's hard limit it
    stops asking at the second refusal and sends the rest of the batch in one piece."""
    from broadcaster import defaults

    monkeypatch.setattr(defaults, "SMTP_RAMP_SLICE", 2)
    channel = email_channel(mailing, inbox.port, 4)
    post = a_post()
    results: list[object] = []

    def back_after_the_first_result(settled) -> None:
        inbox.max_connections = None  # the relay takes them all again
        results.extend(r for _, r in settled)

    inbox.max_connections = 1
    channel.send_batch(post, people(range(16)), back_after_the_first_result)
    assert (inbox.refused_connections, inbox.greetings, len(channel._kept)) == (3, 4, 4), \
        "2 over 1 connection, 4 over 2, the other 10 over all 4"

    channel.batches_done()
    inbox.max_connections, inbox.refused_connections = 2, 0  # a relay that never takes more than 2
    channel.send_batch(post, people(range(16, 32)), lambda settled: results.extend(r for _, r in settled))
    assert inbox.refused_connections == 3, "2 of 4 at first, then 1 of 3: the rest in one piece"
    channel.batches_done()
    assert [type(r).__name__ for r in results] == ["Receipt"] * 32
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == sorted(f"p{n}@example.com" for n in range(32)), "each once"


def test_a_relay_that_goes_away_between_slices_leaves_the_rest_to_go_round_again(
        mailing: Project, inbox: Inbox, monkeypatch: pytest.MonkeyPatch):
    """A relay taking one connection of four (the batch goes a slice at a time) that then drops
    it and takes no more: the slice's recipient in flight is in doubt, the next slice finds no
    connection at all, and the rest of the batch is told why, once each, in the relay's words,
    for another round (which sends each of them once the relay is back)."""
    from broadcaster import defaults
    from broadcaster.errors import TransientDeliveryError

    monkeypatch.setattr(defaults, "SMTP_RAMP_SLICE", 2)
    channel = email_channel(mailing, inbox.port, 4)
    post = a_post()
    results: dict[str, object] = {}

    def going_away(settled) -> None:
        if not results:  # the first result in: the relay drops the next message, then restarts
            inbox.drop_before_storing, inbox.max_connections = 1, 0
        for r, outcome in settled:
            assert r.address not in results, f"{r.address} reported twice"
            results[r.address] = outcome

    inbox.max_connections = 1
    channel.send_batch(post, people(range(8)), going_away)
    channel.batches_done()
    assert type(results.pop("p0@example.com")).__name__ == "Receipt"
    doubt = results.pop("p1@example.com")
    assert isinstance(doubt, TransientDeliveryError) and "connection lost" in str(doubt), doubt
    assert sorted(results) == [f"p{n}@example.com" for n in range(2, 8)], "the rest, each once"
    assert all(isinstance(e, TransientDeliveryError) and "Too many concurrent SMTP connections" in str(e)
               for e in results.values()), results
    assert inbox.refused_connections == 3 + 1 + 2, "3 at first, the reopen after the drop, 2 next slice"

    inbox.max_connections = None  # back: the next round sends them
    again: list[object] = []
    channel.send_batch(post, people(range(1, 8)), lambda settled: again.extend(o for _, o in settled))
    channel.batches_done()
    assert [type(o).__name__ for o in again] == ["Receipt"] * 7
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == sorted(f"p{n}@example.com" for n in range(8)), "each once"


@pytest.mark.parametrize("where, reply, attempts", [
    ("greeting", "421 4.7.0 Too many concurrent SMTP connections from this IP", 3),
    ("greeting", "554 5.7.1 Client host rejected: Access denied", 1),
    ("EHLO", "421 4.3.2 Try again later", 3),
    ("EHLO", "550 5.7.1 Client not authorized", 1),
])
def test_a_relay_that_turns_every_connection_away_is_tried_again_or_failed_by_its_code(
        mailing: Project, inbox: Inbox, where: str, reply: str, attempts: int):
    """No connection at all, where the greeting goes (a relay at its limit, or one that refuses
    this machine) or at EHLO (and HELO after it): a 4xx goes round again until the attempts
    run out, a 5xx ("client host rejected" is not a limit that passes) fails every recipient
    at once; both in the relay's words, and `retry` sends them once the relay takes them."""
    if where == "greeting":
        inbox.max_connections, inbox.limit_reply = 0, reply
    else:
        inbox.refuse_greeting = reply
    mailing.write(EMAIL_SECTION.format(port=inbox.port, connections=2))  # [retry] attempts = 3
    subscribe(mailing, "email\n" + "".join(f"user{n}@example.com\n" for n in range(3)))
    outcome = announce(mailing)
    assert outcome["exit_code"] == 3 and outcome["recipients"]["email"] == {"failed": 3}, outcome
    failed = mailing.rows("SELECT error, attempts FROM deliveries WHERE channel = 'email'")
    assert all(f"turned the connection away: {reply}" in e for e, _ in failed), failed
    assert {a for _, a in failed} == {attempts} and inbox.messages == []
    if where == "greeting":
        assert inbox.refused_connections == 2 * attempts, "two connections a round"
    inbox.max_connections, inbox.refuse_greeting = None, None
    assert mailing.cli("retry", "--json").exit_code == 0
    sent = sorted(a for m in inbox.messages for a in m.envelope_to)
    assert sent == [f"user{n}@example.com" for n in range(3)]


def test_a_login_put_off_is_tried_again_not_failed(project: Project, monkeypatch: pytest.MonkeyPatch):
    """454 to AUTH ("too many login attempts, try later") is the server's to end, not a wrong
    password: the recipients go round again rather than failing at once."""
    from aiosmtpd.smtp import AuthResult

    sessions: list[object] = []

    def check(server, session, envelope, mechanism, auth_data):
        if session not in sessions:
            sessions.append(session)
        if session is sessions[0]:  # every mechanism smtplib tries on the first connection
            return AuthResult(success=False, handled=False, message="454 4.7.0 Too many login attempts")
        return AuthResult(success=True, handled=False)

    with logging_in(project, monkeypatch, check, "pw-123") as box:
        outcome = announce(project)
        assert outcome["exit_code"] == 0 and outcome["recipients"]["email"] == {"sent": 1}, outcome
        assert len(sessions) == 2 and len(box.messages) == 1


def a_post() -> Post:
    """A post for the channel's own tests, which call `send_batch` without the core."""
    from broadcaster.channels.base import Post

    return Post("Body https://status.example.com/incidents/x/\n", subject="Subject", html="<p>Body</p>",
                update_id="u1", locale="en")


def email_channel(project: Project, port: int, connections: int) -> EmailChannel:
    """The project's email channel, sending to `port` over `connections`, for the channel's own tests."""
    from broadcaster.preflight import open_channels
    from broadcaster.settings import load_settings

    project.write(EMAIL_SECTION.format(port=port, connections=connections))
    return open_channels(load_settings(project.config))["email"]  # type: ignore[return-value]


def people(numbers: range) -> list[Recipient]:
    """Recipients p{n}@example.com with token t{n}, delivery n, for `send_batch` called directly."""
    from broadcaster.channels.base import Recipient

    return [Recipient(n, f"p{n}@example.com", f"t{n}", None, False) for n in numbers]


def test_a_bug_while_opening_connections_closes_those_that_did_open(mailing: Project, inbox: Inbox,
                                                                    monkeypatch: pytest.MonkeyPatch):
    """The connections are opened together; if one of them fails in a way nobody foresaw (a
    bug, not a refused login), the error reaches the core and the others are closed, not left
    open to a relay that limits how many one client may hold."""
    from broadcaster.channels.email import EmailChannel

    channel = email_channel(mailing, inbox.port, 3)
    opened: list[smtplib.SMTP] = []
    calls = itertools.count(1)  # next() is atomic: the three are opened from three threads
    connect = EmailChannel._connect

    def flaky(self: EmailChannel) -> smtplib.SMTP:
        if next(calls) == 3:
            raise RuntimeError("a bug")
        connection = connect(self)
        opened.append(connection)
        return connection

    monkeypatch.setattr(EmailChannel, "_connect", flaky)
    post = a_post()
    with pytest.raises(RuntimeError, match="a bug"):
        channel.send_batch(post, people(range(3)), lambda settled: None)
    assert len(opened) == 2 and all(c.sock is None for c in opened), "closed, not left open"
    assert inbox.messages == [] and channel._kept == []


def test_a_batch_with_nobody_left_opens_no_connection(mailing: Project, inbox: Inbox):
    """A batch whose recipients all left the list since it was recorded reaches the channel
    empty: nothing to send, no connection opened, nothing reported."""
    channel = email_channel(mailing, inbox.port, 2)
    post = a_post()
    reported: list[object] = []
    channel.send_batch(post, [], reported.extend)
    assert reported == [] and inbox.greetings == 0 and channel._kept == []


def test_a_kept_connection_that_died_is_replaced(mailing: Project, inbox: Inbox):
    from broadcaster.channels.base import Recipient

    channel = email_channel(mailing, inbox.port, 1)
    post = a_post()
    results: list[object] = []

    def report(settled):
        results.extend(result for _, result in settled)

    channel.send_batch(post, [Recipient(1, "ana@example.com", "t1", None, False)], report)
    (kept,) = channel._kept
    kept.sock.shutdown(socket.SHUT_RDWR)  # the line went dead while it waited
    channel.send_batch(post, [Recipient(2, "bob@example.com", "t2", None, False)], report)
    channel.batches_done()
    assert [type(r).__name__ for r in results] == ["Receipt", "Receipt"]
    assert inbox.greetings == 2 and len(inbox.messages) == 2 and channel._kept == []


def test_percent_signs_in_a_message_reach_the_reader_as_written(mailing: Project, inbox: Inbox):
    """Each copy is the prepared message %-formatted with the recipient's parts: a % of the
    message's own ("100%", "%s", "%(name)s", "%%") must come out as it went in."""
    from broadcaster.channels.base import Post, Recipient

    channel = email_channel(mailing, inbox.port, 1)
    words = "100% of card payments fail: %s %(name)s %% %d"
    post = Post(f"{words}\nhttps://status.example.com/incidents/x/\n", subject=f"Down: {words}",
                html=f"<p>{words}</p>", update_id="u1", locale="en")
    results: list[object] = []
    channel.send_batch(post, [Recipient(1, "ana@example.com", "t1", None, False)],
                       lambda settled: results.extend(r for _, r in settled))
    channel.batches_done()
    (message,) = inbox.messages
    assert [type(r).__name__ for r in results] == ["Receipt"]
    assert message["Subject"] == f"Down: {words}" and message["To"] == "ana@example.com"
    assert words in message.get_body(("plain",)).get_content()
    assert words in message.get_body(("html",)).get_content()
    assert "/unsubscribe/t1" in message["List-Unsubscribe"]


def test_a_list_with_nobody_to_tell_is_not_fanned_out(mailing: Project, monkeypatch: pytest.MonkeyPatch):
    """The fan-out takes each list's size from the record. Everyone who was counted in the
    preview may have left before the update is recorded: a list that recorded nobody gets no
    fan-out at all (no progress line, no connection), as when the list was counted after."""
    from broadcaster.dispatch import Dispatcher
    from broadcaster.ledger.sql import SQLLedger

    fanned: list[tuple[str, int]] = []
    real_fan_out, real_record = Dispatcher.fan_out, SQLLedger.record

    def fan_out(self, channel, *args, total: int, **kwargs):  # type: ignore[no-untyped-def]
        fanned.append((channel.spec.name, total))
        return real_fan_out(self, channel, *args, total=total, **kwargs)

    def record(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if leave:  # they all unsubscribe between the preview and the record
            with self.transaction() as db:
                db.execute("UPDATE subscribers SET active = 0")
        return real_record(self, *args, **kwargs)

    monkeypatch.setattr(Dispatcher, "fan_out", fan_out)
    monkeypatch.setattr(SQLLedger, "record", record)
    subscribe(mailing)
    leave = True
    assert announce(mailing)["exit_code"] == 0
    assert fanned == [] and mailing.inbox.messages == []
    leave = False
    subscribe(mailing, "email,locale\ndee@example.com,en\neve@example.com,es\n")  # newcomers
    assert announce(mailing)["exit_code"] == 0
    assert fanned == [("email", 2)] and len(mailing.inbox.messages) == 2


def test_once_the_pace_slowed_a_batch_opens_no_more_connections_than_it_sends_a_second(mailing: Project,
                                                                                      inbox: Inbox):
    """After the relay put messages off and the pace slowed to what it took (3 a second here),
    the next batch asks for 3 connections, not the 16 set: each still sends about once a second."""
    channel = email_channel(mailing, inbox.port, 16)
    channel._pace.heard(100.0, 3, 0)
    assert channel._pace.heard(100.001, 0, 16) and channel._pace.rate == 3
    reported: list[object] = []
    channel.send_batch(a_post(), people(range(6)), reported.extend)
    channel.batches_done()
    assert len(reported) == 6 and len(inbox.messages) == 6
    assert inbox.greetings == 3, "no more connections than the pace sends a second"
