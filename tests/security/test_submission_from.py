"""Issue 12, hole 4: the submission From check read only part of the header block, the
way one parser saw it; IMAP ENVELOPE then showed another doctor as the sender. Each
variant that passed before is refused now, on a real submission listener."""

from __future__ import annotations

import imaplib
import smtplib

import pytest

from tests.security.helpers import tls_context
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(180)
JEAN, CLAIRE = "jean.martin@a.example", "claire.durand@a.example"
TAIL = f"To: <{CLAIRE}>\r\nSubject: ordonnance\r\n\r\nBonjour.\r\n".encode()

BYPASSES = {
    "from after 256 KB of headers": b"".join(f"X-Pad-{n}: {'a' * 900}\r\n".encode() for n in range(300))
    + f"From: {CLAIRE}\r\n".encode() + TAIL,
    "space before the colon": f"From : {CLAIRE}\r\n".encode() + TAIL,
    "leading junk line": f"junk line\r\nFrom: {CLAIRE}\r\n".encode() + TAIL,
    "NUL in the name": f"Fr\0om: {CLAIRE}\r\nFrom: {JEAN}\r\n".encode() + TAIL,
    "only a Sender": f"Sender: {CLAIRE}\r\n".encode() + TAIL,
    "a Sender beside our From": f"From: {JEAN}\r\nSender: {CLAIRE}\r\n".encode() + TAIL,
    "a Reply-To of someone else": f"From: {JEAN}\r\nReply-To: {CLAIRE}\r\n".encode() + TAIL,
    "two From fields": f"From: {JEAN}\r\nFrom: {CLAIRE}\r\n".encode() + TAIL,
    "bare LF hiding a field": f"X-A: 1\nFrom: {CLAIRE}\r\nFrom: {JEAN}\r\n".encode() + TAIL,
    "bare CR hiding a field": f"X-A: 1\rFrom: {CLAIRE}\r\nFrom: {JEAN}\r\n".encode() + TAIL,
    "another address as display name": f"From: \"{CLAIRE}\" <{JEAN}>\r\n".encode() + TAIL,
    "encoded address as display name": f"From: =?utf-8?q?{CLAIRE.replace('@', '=40')}?= <{JEAN}>\r\n".encode()
    + TAIL,
    "two angle addresses": f"From: <{CLAIRE}> <{JEAN}>\r\n".encode() + TAIL,
    "another doctor with LF line ends": f"Subject: x\nFrom: {CLAIRE}\n\nBonjour.\n".encode(),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    inst = MssInstance(tmp_path_factory.mktemp("from") / "a", "a.example")
    inst.start("submission", "imap")
    yield inst
    inst.stop()


def submit(inst: MssInstance, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as client:
        client.starttls(context=tls_context(inst))
        client.login(JEAN, inst.passwords[JEAN])
        try:
            client.sendmail(JEAN, [CLAIRE], raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
    return 250, b""


@pytest.mark.parametrize("name", BYPASSES)
def test_from_check_bypass_is_refused(server: MssInstance, name: str) -> None:
    code, text = submit(server, BYPASSES[name])
    assert code == 550 and text[:3] in (b"5.7", b"5.6"), (name, code, text)


def test_a_missing_from_is_the_envelope_sender(server: MssInstance) -> None:
    assert submit(server, b"Subject: sans From\r\n\r\nx\r\n") == (250, b"")
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
    imap.starttls(ssl_context=tls_context(server))
    imap.login(CLAIRE, server.passwords[CLAIRE])
    imap.select("INBOX", readonly=True)
    _, found = imap.search(None, 'SUBJECT "sans From"')
    _, data = imap.fetch(found[0].split()[-1], "(ENVELOPE)")
    imap.logout()
    assert b'((NIL NIL "jean.martin" "a.example"))' in data[0]


@pytest.mark.parametrize("raw", [
    f"From: Dr Jean Martin <{JEAN}>\r\nReply-To: {JEAN}\r\n".encode() + TAIL,
    f"From: {JEAN} (Dr Jean Martin)\r\nSender: {JEAN}\r\n".encode() + TAIL,
    f"From: =?utf-8?q?Dr_J=C3=A9an_Martin?=\r\n <{JEAN}>\r\n".encode() + TAIL,
    # LF line ends throughout (Python's email package writes them): one reading only.
    f"From: {JEAN}\nTo: <{CLAIRE}>\nSubject: LF\n\nBonjour.\n".encode(),
])
def test_honest_headers_still_pass(server: MssInstance, raw: bytes) -> None:
    assert submit(server, raw) == (250, b"")
