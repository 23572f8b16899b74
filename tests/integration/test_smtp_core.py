"""SMTP MX and submission against a real `mss serve`, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from mssmail.store.service import Store
from tests.conftest import PG_AVAILABLE, _drop_schema, _pg_schema_url
from tests.support.instance import MssInstance
from tests.support.mailbox import contents

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "sqlite-workers"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Every test runs in process on both engines, and once more through SMTP worker
    processes ([smtp] workers, [submission] workers): same replies, same stored bytes."""
    schema = url = None
    if request.param == "postgresql":
        if not PG_AVAILABLE:
            pytest.skip("PostgreSQL not reachable")
        schema, url = _pg_schema_url()
    inst = MssInstance(tmp_path_factory.mktemp("smtp") / "a", "a.example", database_url=url)
    inst.configure("trust", "domains", '["b.example"]')
    inst.configure("limits", "max_message_size", '"16MB"')
    inst.configure("limits", "max_recipients", "3")
    inst.configure("limits", "max_connections_per_ip", "12")
    inst.configure("limits", "auth_lockout_after", "4")
    inst.configure("limits", "auth_delay_after", "2")
    if request.param.endswith("-workers"):
        inst.configure("smtp", "workers", "2")
        inst.configure("submission", "workers", "2")
    inst.db_url = url
    inst.start("smtp", "submission")
    if request.param.endswith("-workers"):
        assert any("(STARTTLS; 2 worker processes)" in line for line in inst.output)
    yield inst
    assert inst.stop() == 0
    if schema:
        _drop_schema(schema)


def tls_context(inst: MssInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca_file))


def submission(inst: MssInstance, user: str | None = "jean.martin") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30)
    client.starttls(context=tls_context(inst))
    client.ehlo("client.a.example")
    if user:
        client.login(inst.address(user), inst.passwords[inst.address(user)])
    return client


def mx(inst: MssInstance) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30)
    client.starttls(context=tls_context(inst))
    client.ehlo("mx.b.example")
    return client


def open_store(inst: MssInstance) -> Store:
    url = inst.db_url or f"sqlite:///{inst.data / 'mss.db'}"
    return Store(url, inst.data / "blobs", pool_size=2)


def stored_inbox(inst: MssInstance, local: str, folder: str = "INBOX") -> list[bytes]:
    with open_store(inst) as store:
        return contents(store, inst.address(local), folder)


def strip_trace(stored: bytes) -> bytes:
    """Remove what we prepend: our Authentication-Results (how the sender authenticated),
    then the Received header (one folded header each)."""
    for name in (b"Authentication-Results: ", b"Received: "):
        assert stored.startswith(name)
        end = stored.index(b"\r\n")
        while stored[end + 2:end + 3] in (b"\t", b" "):
            end = stored.index(b"\r\n", end + 2)
        stored = stored[end + 2:]
    return stored


def raw_message(subject: str, body: bytes = b"Bonjour.\r\n", sender: str = "jean.martin@a.example",
                to: str = "claire.durand@a.example") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@a.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\n").encode() + body


def test_ehlo_advertises_extensions(server: MssInstance):
    client = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30)
    _code, text = client.ehlo("client.b.example")
    features = text.decode().upper()
    for ext in ("PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 16777216", "ENHANCEDSTATUSCODES", "STARTTLS"):
        assert ext in features
    assert "AUTH" not in features
    client.quit()
    sub = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30)
    sub.ehlo("client")
    assert not sub.has_extn("auth"), "AUTH must not be offered before STARTTLS"
    sub.starttls(context=tls_context(server))
    sub.ehlo("client")
    assert "PLAIN" in sub.esmtp_features["auth"].upper() and "LOGIN" in sub.esmtp_features["auth"].upper()
    sub.quit()


def test_submission_delivers_byte_for_byte_and_copies_to_sent(server: MssInstance):
    raw = raw_message("submit-1", b"Compte rendu \xc3\xa9 joint.\r\n.leading dot\r\n")
    with submission(server) as client:
        client.sendmail("jean.martin@a.example", ["claire.durand@a.example"], raw)
    inbox = [m for m in stored_inbox(server, "claire.durand") if b"<submit-1@a.example>" in m]
    assert len(inbox) == 1
    assert strip_trace(inbox[0]) == raw
    assert b"with ESMTPSA" in inbox[0].split(b"\r\n\r\n")[0]
    sent = [m for m in stored_inbox(server, "jean.martin", "Sent") if b"<submit-1@a.example>" in m]
    assert len(sent) == 1


def test_mx_delivery_and_refusals(server: MssInstance):
    raw = raw_message("mx-1", sender="dr.x@b.example")
    with mx(server) as client:
        assert client.sendmail("dr.x@b.example", ["claire.durand@a.example"], raw) == {}
        code, msg = client.mail("dr.x@b.example")[0], None
        assert code == 250
        code, msg = client.rcpt("ghost@a.example")
        assert (code, msg[:5]) == (550, b"5.1.1")
        code, msg = client.rcpt("someone@elsewhere.example")
        assert code == 550 and msg.startswith(b"5.7.1")
        client.rset()
        code, msg = client.mail("spam@outside.example")
        assert code == 550 and msg.startswith(b"5.7.1")
    assert any(b"<mx-1@a.example>" in m for m in stored_inbox(server, "claire.durand"))


def test_auth_before_starttls_and_mail_before_auth(server: MssInstance):
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30)
    client.ehlo("client")
    code, msg = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0jean.martin@a.example\0x").decode())
    assert code == 530 and msg.startswith(b"5.7.0")
    code, msg = client.docmd("MAIL", "FROM:<jean.martin@a.example>")
    assert code == 530 and msg.startswith(b"5.7.0")
    client.quit()
    with submission(server, user=None) as tls_client:
        code, msg = tls_client.docmd("MAIL", "FROM:<jean.martin@a.example>")
        assert code == 530 and msg.startswith(b"5.7.0")


def test_sending_as_someone_else_is_refused(server: MssInstance):
    with submission(server) as client:
        code, msg = client.mail("claire.durand@a.example")
        assert (code, msg[:5]) == (553, b"5.7.1")
        client.rset()
        client.mail("jean.martin@a.example")
        client.rcpt("claire.durand@a.example")
        code, msg = client.data(raw_message("forged", sender="claire.durand@a.example"))
        assert code == 550 and msg.startswith(b"5.7.1")


def test_delegated_organisational_sender_is_allowed(server: MssInstance):
    raw = raw_message("org-1", sender="laboratoire@a.example", to="jean.martin@a.example")
    with submission(server, user="claire.durand") as client:
        assert client.sendmail("laboratoire@a.example", ["jean.martin@a.example"], raw) == {}


def test_too_many_recipients_and_oversized(server: MssInstance):
    with submission(server) as client:
        client.mail("jean.martin@a.example")
        for local in ("claire.durand", "laboratoire", "dui"):
            assert client.rcpt(f"{local}@a.example")[0] == 250
        code, msg = client.rcpt("jean.martin@a.example")
        assert (code, msg[:5]) == (452, b"4.5.3")
        client.rset()
        code, msg = client.mail("jean.martin@a.example", ["SIZE=99999999"])
        assert (code, msg[:5]) == (552, b"5.3.4")
        client.rset()
        client.mail("jean.martin@a.example")
        client.rcpt("claire.durand@a.example")
        code, msg = client.data(raw_message("big", b"x" * 998 + b"\r\n") * 1 + (b"y" * 998 + b"\r\n") * 17_500)
        assert (code, msg[:5]) == (552, b"5.3.4")


def test_ten_megabyte_attachment_end_to_end(server: MssInstance):
    payload = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "jean.martin@a.example", "claire.durand@a.example", "imagerie"
    msg["Message-ID"] = "<big-attachment@a.example>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0100"
    msg.set_content("Images jointes.")
    msg.add_attachment(payload, maintype="application", subtype="octet-stream", filename="scanner.bin")
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    with submission(server) as client:
        client.sendmail("jean.martin@a.example", ["claire.durand@a.example"], raw)
    stored = [m for m in stored_inbox(server, "claire.durand") if b"<big-attachment@a.example>" in m]
    assert len(stored) == 1
    assert hashlib.sha256(strip_trace(stored[0])).digest() == hashlib.sha256(raw).digest()


def _raw_session(inst: MssInstance, lines: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", inst.ports["smtp"]), timeout=20) as sock:
        sock.recv(4096)
        replies = b""
        for line in lines:
            sock.sendall(line)
            time.sleep(0.05)
            try:
                replies += sock.recv(65536)
            except TimeoutError:
                break
        return replies


def test_garbage_commands_answered_and_server_stays_up(server: MssInstance):
    replies = _raw_session(server, [
        b"EHLO x\r\n", b"\x00\x01\x02 garbage\r\n", b"MAIL FROM:<<<>>>\r\n", b"RCPT TO:<a@a.example>\r\n",
        b"DATA\r\n", b"HELO\r\n", b"X" * 5000 + b"\r\n", b"\xff\xfe\r\n", b"QUIT\r\n",
    ])
    assert b"500" in replies or b"501" in replies
    assert b"503" in replies  # RCPT/DATA out of sequence
    # Still serving.
    with mx(server) as client:
        assert client.noop()[0] == 250


def test_bare_lf_nul_and_broken_mime_stored_as_received(server: MssInstance):
    body = (b"From: dr.x@b.example\r\nTo: claire.durand@a.example\r\nMessage-ID: <broken-1@b.example>\r\n"
            b"Content-Type: multipart/mixed; boundary=\"nope\r\n\r\n--nope\nbare LF line\nNUL\x00byte\r\n"
            b"8-bit \xe9\xe8 latin-1\r\n--nope-- unterminated")
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=20) as sock:
        sock.recv(4096)
        sock.sendall(b"EHLO b.example\r\nMAIL FROM:<dr.x@b.example>\r\nRCPT TO:<claire.durand@a.example>\r\nDATA\r\n")
        time.sleep(0.3)
        sock.recv(4096)
        sock.sendall(body + b"\r\n.\r\n")
        deadline = time.time() + 10
        answer = b""
        while b"250 2.0.0" not in answer and time.time() < deadline:
            answer += sock.recv(4096)
        assert b"250 2.0.0" in answer
        sock.sendall(b"QUIT\r\n")
    stored = [m for m in stored_inbox(server, "claire.durand") if b"<broken-1@b.example>" in m]
    assert len(stored) == 1
    assert strip_trace(stored[0]) == body + b"\r\n"


def test_per_ip_connection_limit(server: MssInstance):
    sockets = []
    try:
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10)
            assert s.recv(1024).startswith(b"220")
            sockets.append(s)
        extra = socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10)
        assert extra.recv(1024).startswith(b"421 4.7.0")
        extra.close()
    finally:
        for s in sockets:
            s.close()


def test_wrong_password_until_lockout_zz(server: MssInstance):
    """Named to run last in the module: it blocks the source address 127.0.0.1."""
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=60)
    client.starttls(context=tls_context(server))
    started = time.monotonic()
    codes = []
    for _ in range(2):  # smtplib's login() tries PLAIN then LOGIN: 2 failures a call
        try:
            client.login("dui@a.example", "wrong-password")
        except smtplib.SMTPAuthenticationError as exc:
            codes.append((exc.smtp_code, exc.smtp_error[:5]))
    assert codes == [(535, b"5.7.8")] * 2
    assert time.monotonic() - started >= 0.5, "failures past auth_delay_after must be delayed"
    with pytest.raises(smtplib.SMTPAuthenticationError) as locked:
        client.login("dui@a.example", server.passwords["dui@a.example"])
    assert locked.value.smtp_code == 454 and locked.value.smtp_error.startswith(b"4.7.0")
    client.close()
    events = server.mss("audit", "export").stdout
    assert '"login.lockout"' in events and '"login.failure"' in events


def test_sigterm_exits_zero_and_prints_listeners(tmp_path: Path):
    inst = MssInstance(tmp_path / "a", "a.example")
    inst.start("smtp", "submission")
    assert any(line.startswith("smtp: listening on 127.0.0.1:") for line in inst.output)
    assert any(line.startswith("submission: listening on") for line in inst.output)
    client = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=10)
    client.ehlo("x")
    assert inst.stop() == 0
    # The idle session was told the service is going away (421), then disconnected.
    try:
        code = client.noop()[0]
    except (smtplib.SMTPServerDisconnected, OSError):
        code = 421
    assert code == 421
