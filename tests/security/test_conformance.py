"""Issue 12, hole 10: what other operators rely on. Bounces (`MAIL FROM:<>`) and the
postmaster (RFC 5321 4.5.1) reach us; the relay never sends a bare CR and refuses a
peer whose certificate our trust anchors' CRLs revoke; folder names like `../evil`
are refused (as Dovecot does). Real listeners throughout."""

from __future__ import annotations

import datetime as dt
import imaplib
import smtplib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crypto import pki
from crypto.context import trust_for
from mssmail.config import load_config
from mssmail.queue import client
from mssmail.tls import client_context
from tests.security.helpers import RawSmtp, tls_context
from tests.support import mailbox
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(180)


def inbox(inst: MssInstance, address: str) -> list[bytes]:
    """The INBOX's messages as stored (read through the store API, as tests do)."""
    return mailbox.stored(inst.data, address)


@pytest.fixture
def a(tmp_path: Path):
    inst = MssInstance(tmp_path / "a", "a.example")
    inst.configure("trust", "domains", '["b.example"]')
    yield inst
    inst.stop()


def test_null_sender_and_postmaster_are_accepted_on_the_mx(a: MssInstance) -> None:
    a.start("smtp")
    raw = RawSmtp(a.ports["smtp"])
    assert raw.cmd("EHLO mx.b.example").startswith(b"250")
    assert raw.cmd("MAIL FROM:<>").startswith(b"250 2.1.0"), "bounces and DSNs must come back"
    assert raw.cmd("RCPT TO:<Postmaster>").startswith(b"250 2.1.5"), "RFC 5321 4.5.1"
    assert raw.cmd("RCPT TO:<postmaster@a.example>").startswith(b"250 2.1.5")
    assert raw.cmd("DATA").startswith(b"354")
    raw.send(b"From: MAILER-DAEMON@b.example\r\nSubject: Undelivered Mail\r\n\r\nbounce\r\n.")
    assert raw.reply().startswith(b"250")
    raw.cmd("QUIT")
    raw.close()
    [stored] = inbox(a, "postmaster@a.example")
    assert b"Subject: Undelivered Mail" in stored


def test_folder_names_with_dot_levels_are_refused(a: MssInstance) -> None:
    a.start("imap")
    jean = a.address("jean.martin")
    imap = imaplib.IMAP4("127.0.0.1", a.ports["imap"], timeout=30)
    imap.starttls(ssl_context=tls_context(a))
    imap.login(jean, a.passwords[jean])
    for name in ("../evil", "Projets/../../evil", "./x", "a/.."):
        status, _ = imap.create(f'"{name}"')
        assert status == "NO", name
    assert imap.create("Projets/2026")[0] == "OK"
    listed = b" ".join(imap.list()[1])
    assert b"evil" not in listed and b"Projets/2026" in listed
    imap.logout()


@pytest.fixture
def b(a: MssInstance, tmp_path: Path):
    """b.example, trusting a.example, with its MX up; a is not started (the tests drive
    a's relay client directly with a's configuration)."""
    inst = MssInstance(tmp_path / "b", "b.example")
    inst.federate_with(a)
    a.federate_with(inst)
    inst.start("smtp")
    yield inst
    inst.stop()


def relay(a: MssInstance, b: MssInstance, raw: bytes) -> client.RecipientResult:
    config = load_config(a.data)
    results = client.deliver(client.Peer("127.0.0.1", b.ports["smtp"]), client_context(config), "a.example",
                             a.address("jean.martin"), [b.address("claire.durand")], raw, 30,
                             trust_for(config))
    return results[b.address("claire.durand")]


def test_relay_never_sends_a_bare_cr(a: MssInstance, b: MssInstance) -> None:
    raw = (b"From: jean.martin@a.example\r\nTo: claire.durand@b.example\r\nSubject: cr\r\n\r\n"
           b"line one\rline two\r.\rnot the end\r\n")
    assert relay(a, b, raw).status == client.SENT
    [stored] = inbox(b, b.address("claire.durand"))
    assert stored.count(b"\r") == stored.count(b"\r\n")
    assert stored.endswith(b"line one\r\nline two\r\n.\r\nnot the end\r\n")


def test_relay_refuses_a_peer_whose_certificate_is_revoked(a: MssInstance, b: MssInstance,
                                                           tmp_path: Path) -> None:
    raw = b"From: jean.martin@a.example\r\nTo: claire.durand@b.example\r\nSubject: crl\r\n\r\nx\r\n"
    ca_cert, ca_key = pki.load_ca(b.data / "pki")
    server_cert = x509.load_pem_x509_certificate((b.data / "pki" / "server.pem").read_bytes())
    crl = pki.build_crl(ca_cert, ca_key, [(server_cert.serial_number, dt.datetime.now(dt.UTC)
                                           - dt.timedelta(minutes=10))])
    (tmp_path / "b-crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
    a.mss("cert", "trust", "--crl", str(tmp_path / "b-crl.pem"))
    result = relay(a, b, raw)
    assert result.status == client.DEFERRED and "revoked" in result.text
    assert inbox(b, b.address("claire.durand")) == []
    # A CRL that does not list it changes nothing.
    (a.data / "pki" / "crls").joinpath(next(p.name for p in (a.data / "pki" / "crls").iterdir())).unlink()
    empty = pki.build_crl(ca_cert, ca_key, [])
    (tmp_path / "b-crl-empty.pem").write_bytes(empty.public_bytes(Encoding.PEM))
    a.mss("cert", "trust", "--crl", str(tmp_path / "b-crl-empty.pem"))
    assert relay(a, b, raw).status == client.SENT
    assert len(inbox(b, b.address("claire.durand"))) == 1


def test_submission_takes_rcpt_to_postmaster(a: MssInstance) -> None:
    a.start("submission")
    jean = a.address("jean.martin")
    with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=tls_context(a))
        smtp.login(jean, a.passwords[jean])
        smtp.mail(jean)
        assert smtp.rcpt("<postmaster>")[0] == 250
