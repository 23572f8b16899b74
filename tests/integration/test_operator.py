"""The operator's view (issue #12): what a new administrator meets at the command line
and in the log, tried as they would: a taken port, a mistyped service, `| head`, the
JSON log after real sessions, a free-text directory search, a foreign domain."""

from __future__ import annotations

import imaplib
import json
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.instance import MSS, MssInstance

pytestmark = pytest.mark.timeout(240)

DOMAIN = "a.example"
WRONG_PASSWORD = "Wrong-Secret-7f3a9"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    instance = MssInstance(tmp_path_factory.mktemp("operator") / "a", DOMAIN)
    yield instance
    instance.stop()


def test_a_taken_port_is_one_sentence_and_exit_1(inst: MssInstance) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        inst.configure("imap", "port", str(port))
        try:
            result = subprocess.run([*MSS, "--data", str(inst.data), "serve", "--only", "imap"],
                                    capture_output=True, text=True, env=inst.env, timeout=60)
        finally:
            inst.configure("imap", "port", str(inst.ports["imap"]))
    assert result.returncode == 1
    assert f"mss: Couldn't listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    # The log says it too, as one JSON line naming the service.
    errors = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "serve.error" and e["service"] == "imap" for e in errors)


def test_only_with_an_unknown_service_exits_2_listing_the_valid_names(inst: MssInstance) -> None:
    result = inst.mss("serve", "--only", "smtp,bogus", check=False)
    assert result.returncode == 2
    assert "bogus" in result.stderr
    for name in ("smtp", "submission", "imap", "ldap"):
        assert name in result.stderr.split("valid names:")[1]


def test_output_into_a_closed_pipe_is_quiet(inst: MssInstance) -> None:
    # Enough output to fill the pipe after `head` has gone: audit events of the demo and more.
    from mssmail import audit
    from mssmail.config import load_config
    from mssmail.store.service import Store

    store = Store.from_config(load_config(inst.data, environ={}))
    try:
        store._write(lambda s: audit.record_many(
            s, [audit.Event(audit.ADMIN, "test", details={"n": i, "pad": "x" * 200}) for i in range(2000)]))
    finally:
        store.close()
    command = " ".join([*MSS, "--data", str(inst.data), "audit", "export"]) + " | head -1"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=inst.env, timeout=60)
    assert result.stdout.startswith('{"seq": 1')
    assert result.stderr == "", result.stderr


def test_log_lines_for_deliveries_refusals_and_login_failures(inst: MssInstance) -> None:
    # The MX takes mail from the space of trust, never "from" our own domain (issue 12).
    inst.configure("trust", "domains", '["b.example"]')
    inst.start("smtp", "submission", "imap")
    try:
        sender, rcpt = "dr.x@b.example", f"jean.martin@{DOMAIN}"
        with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30) as smtp:
            smtp.sendmail(sender, [rcpt], f"From: {sender}\r\nSubject: log\r\n\r\nbody\r\n".encode())
            smtp.mail(sender)
            code, _ = smtp.rcpt(f"nobody.here@{DOMAIN}")
            assert code >= 500
        context = ssl.create_default_context(cafile=str(inst.ca_file))
        with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
            smtp.starttls(context=context)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login(rcpt, WRONG_PASSWORD)
        imap = imaplib.IMAP4("127.0.0.1", inst.ports["imap"], timeout=30)
        imap.starttls(ssl_context=context)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(rcpt, WRONG_PASSWORD)
        imap.logout()
        # A successful login must not leave its password anywhere either.
        with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
            smtp.starttls(context=context)
            smtp.login(rcpt, inst.passwords[rcpt])
    finally:
        inst.stop()
    text = (inst.data / "logs" / "mss.log").read_text()
    assert WRONG_PASSWORD not in text and inst.passwords[rcpt] not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    delivered = [e for e in lines if e["event"] == "smtp.delivered"]
    assert delivered and delivered[0]["queue_id"] and delivered[0]["peer"] == "127.0.0.1"
    assert delivered[0]["recipients"] == [rcpt]
    refused = [e for e in lines if e["event"] == "smtp.refused" and e["command"] == "RCPT"]
    assert refused and refused[0]["code"].startswith("5") and refused[0]["reason"]
    failures = {e["service"] for e in lines if e["event"] == "login.failure"}
    assert {"submission", "imap"} <= failures
    # The deprecation warning aiosmtpd writes after every successful AUTH is gone.
    assert "login_data is deprecated" not in text


def test_directory_search_is_free_text_unless_a_filter(inst: MssInstance) -> None:
    found = inst.mss("directory", "search", "MARTIN", "--json")
    assert [e["mail"] for e in json.loads(found.stdout)] == [[f"jean.martin@{DOMAIN}"]]
    rpps = "10000000009"  # Luhn-valid
    inst.mss("directory", "add-person", "--rpps", rpps, "--family-name", "Lefèvre", "--given-name", "Hélène",
             "--mail", f"helene.lefevre@{DOMAIN}")
    for query in ("helene LEFEVRE", "Hélène", "lefèvre", rpps[:8]):
        out = inst.mss("directory", "search", query).stdout
        assert f"helene.lefevre@{DOMAIN}" in out, query
    assert f"helene.lefevre@{DOMAIN}" not in inst.mss("directory", "search", "helene martin").stdout
    # A filter is still a filter.
    filtered = inst.mss("directory", "search", "(sn=lef*)").stdout
    assert f"helene.lefevre@{DOMAIN}" in filtered and "jean.martin" not in filtered


def test_mailbox_create_refuses_a_domain_that_is_not_ours(inst: MssInstance) -> None:
    refused = inst.mss("mailbox", "create", "someone@elsewhere.example", check=False)
    assert refused.returncode == 1 and "elsewhere.example is not a domain of this server" in refused.stderr
    assert "someone@elsewhere.example" not in inst.mss("mailbox", "list").stdout
    inst.mss("mailbox", "create", "someone@elsewhere.example", "--new-domain")
    assert "someone@elsewhere.example" in inst.mss("mailbox", "list").stdout


def test_an_unknown_mss_variable_is_a_warning(inst: MssInstance) -> None:
    result = subprocess.run([*MSS, "--data", str(inst.data), "mailbox", "list"], capture_output=True,
                            text=True, env={**inst.env, "MSS_SERVR_DOMAIN": "typo.example"}, timeout=60)
    assert result.returncode == 0
    assert "MSS_SERVR_DOMAIN is not a setting" in result.stderr


def test_cert_report_exits_1_for_unsigned_in_french(inst: MssInstance, tmp_path: Path) -> None:
    (tmp_path / "plain.eml").write_bytes(f"From: jean.martin@{DOMAIN}\r\nSubject: x\r\n\r\nx\r\n".encode())
    result = inst.mss("cert", "report", str(tmp_path / "plain.eml"), check=False)
    assert result.returncode == 1
    assert "Verdict : NON SIGNÉ" in result.stdout


def test_a_blocked_source_is_a_lockout_line(tmp_path: Path) -> None:
    other = MssInstance(tmp_path / "b", DOMAIN)
    other.configure("limits", "auth_lockout_after", "3")
    other.start("imap")
    try:
        context = ssl.create_default_context(cafile=str(other.ca_file))
        for _ in range(4):
            imap = imaplib.IMAP4("127.0.0.1", other.ports["imap"], timeout=30)
            imap.starttls(ssl_context=context)
            with pytest.raises(imaplib.IMAP4.error):
                imap.login(f"jean.martin@{DOMAIN}", WRONG_PASSWORD)
            imap.logout()
    finally:
        other.stop()
    lines = [json.loads(line) for line in (other.data / "logs" / "mss.log").read_text().splitlines()]
    lockouts = [e for e in lines if e["event"] == "login.lockout"]
    assert lockouts and lockouts[0]["peer"] == "127.0.0.1" and lockouts[0]["service"] == "imap"
    assert WRONG_PASSWORD not in json.dumps(lines)


def test_a_relay_attempt_is_a_log_line_with_its_queue_id(tmp_path: Path) -> None:
    from tests.support.instance import free_port

    other = MssInstance(tmp_path / "c", DOMAIN)
    closed = free_port()  # nobody listens there: the attempt is deferred
    other.configure("trust", "domains", '["b.example"]')
    other.configure("relay", "routes", json.dumps([f"b.example=127.0.0.1:{closed}"]))
    other.configure("relay", "poll_interval", '"1s"')
    other.start("submission", "relay")
    try:
        sender = f"jean.martin@{DOMAIN}"
        with smtplib.SMTP("127.0.0.1", other.ports["submission"], timeout=30) as smtp:
            smtp.starttls(context=ssl.create_default_context(cafile=str(other.ca_file)))
            smtp.login(sender, other.passwords[sender])
            smtp.sendmail(sender, ["dr.x@b.example"], f"From: {sender}\r\nSubject: relay\r\n\r\nx\r\n".encode())
        queued = json.loads(other.mss("queue", "list", "--json").stdout)
        assert queued
        log = other.data / "logs" / "mss.log"
        attempts: list[dict] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not attempts:
            attempts = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "relay.attempt"]
            time.sleep(0.5)
    finally:
        other.stop()
    assert attempts, "no relay.attempt line"
    first = attempts[0]
    assert first["queue_id"] == str(queued[0]["id"]) and first["recipient"] == "dr.x@b.example"
    assert first["outcome"] == "deferred" and first["sender"] == sender
