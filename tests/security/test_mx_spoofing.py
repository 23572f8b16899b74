"""Issue 12, holes 3 and 5: who may claim which sender on the MX, and the verdicts a
reader is shown (Authentication-Results, RFC 8601).

A real `mss serve` for a.example; a second operator b.example exists only as its PKI
(`mss init`), whose server certificate the test presents as a client certificate, as
b's relay would.
"""

from __future__ import annotations

import json
import smtplib
from pathlib import Path

import pytest

from tests.security.helpers import tls_context
from tests.support import mailbox
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(180)


def stored(inst: MssInstance, address: str) -> list[bytes]:
    """The INBOX's messages as stored (read through the store API, as tests do)."""
    return mailbox.stored(inst.data, address)


def message(sender: str, to: str, subject: str, extra: str = "") -> bytes:
    return (f"{extra}From: {sender}\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@test>\r\n\r\nBonjour.\r\n").encode()


def mx(inst: MssInstance, client_cert: MssInstance | None = None) -> smtplib.SMTP:
    context = tls_context(inst)
    if client_cert is not None:
        context.load_cert_chain(str(client_cert.data / "pki" / "server.pem"),
                                str(client_cert.data / "pki" / "server.key"))
    client = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30)
    client.starttls(context=context)
    client.ehlo("mx.test")
    return client


def refused(client: smtplib.SMTP, sender: str, rcpt: str, raw: bytes) -> tuple[int, bytes]:
    try:
        client.sendmail(sender, [rcpt], raw)
    except smtplib.SMTPSenderRefused as exc:
        return exc.smtp_code, exc.smtp_error
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text
    return 250, b""


@pytest.fixture
def a(tmp_path: Path):
    inst = MssInstance(tmp_path / "a", "a.example")
    inst.configure("trust", "domains", '["b.example", "c.example"]')
    yield inst
    inst.stop()


def test_mx_refuses_a_local_sender_without_authentication(a: MssInstance) -> None:
    """Before: MAIL FROM our own doctor, From: Dr Jean Martin, no TLS, no AUTH: delivered."""
    a.start("smtp")
    jean, claire = a.address("jean.martin"), a.address("claire.durand")
    with smtplib.SMTP("127.0.0.1", a.ports["smtp"], timeout=30) as client:
        code, text = refused(client, jean, claire, message(f"Dr Jean Martin <{jean}>", claire, "spoof1"))
    assert code == 550 and b"submitted with authentication" in text
    # A trusted envelope sender does not carry a local From: either (what readers show).
    with mx(a) as client:
        code, text = refused(client, "x@b.example", claire, message(f"Dr Jean Martin <{jean}>", claire, "spoof2"))
    assert code == 550 and text.startswith(b"5.7.1 From: names a local domain")
    # Nor a Sender:, nor a From hidden behind obsolete spacing.
    with mx(a) as client:
        code, _ = refused(client, "x@b.example", claire,
                          message("x@b.example", claire, "spoof3", extra=f"Sender: {jean}\r\n"))
    assert code == 550
    with mx(a) as client:
        raw = message("x@b.example", claire, "spoof4").replace(b"From: x@b.example", f"From : {jean}".encode())
        code, _ = refused(client, "x@b.example", claire, raw)
    assert code == 550
    assert stored(a, claire) == []


def test_every_delivery_says_how_its_sender_was_authenticated(a: MssInstance) -> None:
    a.start("smtp", "submission")
    jean, claire = a.address("jean.martin"), a.address("claire.durand")
    with mx(a) as client:
        assert client.sendmail("x@b.example", [claire], message("x@b.example", claire, "plain-mx")) == {}
    with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30) as client:
        client.starttls(context=tls_context(a))
        client.login(jean, a.passwords[jean])
        assert client.sendmail(jean, [claire], message(jean, claire, "submitted")) == {}
    by_subject = {m.split(b"Subject: ")[1].split(b"\r\n")[0]: m for m in stored(a, claire)}
    assert by_subject[b"plain-mx"].startswith(b"Authentication-Results: a.example; none\r\n")
    assert by_subject[b"submitted"].startswith(
        f"Authentication-Results: a.example; auth=pass smtp.auth={jean}\r\n".encode())


def test_space_of_trust_sender_must_match_the_client_certificate(a: MssInstance, tmp_path: Path) -> None:
    """With require_client_cert, operator b.example can speak for b.example only."""
    b = MssInstance(tmp_path / "b", "b.example", demo=False)
    a.configure("trust", "ca_files", json.dumps(["pki/ca.pem", str(b.ca_file)]))
    a.configure("trust", "require_client_cert", "true")
    a.start("smtp")
    claire = a.address("claire.durand")
    with mx(a, client_cert=b) as client:
        code, text = refused(client, "x@c.example", claire, message("x@c.example", claire, "as-c"))
    assert (code, text[:5]) == (550, b"5.7.1") and b"client certificate" in text
    with mx(a, client_cert=b) as client:
        code, text = refused(client, "x@b.example", claire, message("y@c.example", claire, "from-c"))
    assert code == 550 and text.startswith(b"5.7.1 From: domain is not covered")
    with mx(a, client_cert=b) as client:
        assert client.sendmail("x@b.example", [claire], message("Dr X <x@b.example>", claire, "from-b")) == {}
    [delivered] = stored(a, claire)
    first = delivered.split(b"\r\n")[0]
    assert first.startswith(b"Authentication-Results: a.example; x-tls=pass smtp.x-client-cert=b.example")


@pytest.mark.parametrize("forged", [
    b"Authentication-Results: (c) a.example (c); smime=pass",
    b"Authentication-Results: a.example.; smime=pass",
    b'Authentication-Results: "A.EXAMPLE"; smime=pass',
    b"Authentication-Results : a.example;\r\n\tsmime=pass",
    b"authentication-results:a.example(comment);smime=pass",
])
def test_forged_verdicts_in_any_rfc8601_spelling_are_stripped(a: MssInstance, forged: bytes) -> None:
    """Before: comments around the authserv-id or a final dot kept the forged verdict."""
    a.start("smtp")
    claire = a.address("claire.durand")
    raw = forged + b"\r\n" + message("x@b.example", claire, "forged")
    with mx(a) as client:
        assert client.sendmail("x@b.example", [claire], raw) == {}
    [delivered] = stored(a, claire)
    verdicts = [line for line in delivered.split(b"\r\n\r\n")[0].split(b"\r\n")
                if line.lower().startswith(b"authentication-results")]
    assert verdicts == [b"Authentication-Results: a.example; none"]
    assert b"smime=pass" not in delivered
    # Another operator's verdicts are theirs to make and stay.
    with mx(a) as client:
        assert client.sendmail("x@b.example", [claire], b"Authentication-Results: b.example; smime=pass\r\n"
                               + message("x@b.example", claire, "theirs")) == {}
    assert any(b"Authentication-Results: b.example; smime=pass" in m for m in stored(a, claire))
