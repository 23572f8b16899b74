"""Encryption across operators through the directory, as in the national space of trust.

Operator A has never held a key of B's doctors: it learns Claire's encryption certificate
from B's published directory (an LDIF export of B imported into A's directory), trusts B's
CA, and with `encrypt_outgoing = "required"` the message Jean submits on A leaves signed
and encrypted to Claire's certificate; B stores it encrypted and Claire reads it in clear
over IMAP, with B's verdict on Jean's signature (chained to A's CA, which B trusts)."""

from __future__ import annotations

import email
import imaplib
import json
import smtplib
import ssl
import time

import pytest

from tests.support.instance import MssInstance
from tests.support.mailbox import stored

pytestmark = pytest.mark.timeout(240)


def _send(inst: MssInstance, sender: str, rcpts: list[str], raw: bytes) -> dict:
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=60) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, inst.passwords[sender])
        return smtp.sendmail(sender, rcpts, raw)


def _stored_inbox(inst: MssInstance, address: str, timeout: float = 60) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        found = stored(inst.data, address)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_encrypted_to_a_certificate_found_in_the_directory(instance_factory, tmp_path):
    a = instance_factory("a.example")
    b = instance_factory("b.example")
    a.federate_with(b)
    b.federate_with(a)
    jean, claire = a.address("jean.martin"), b.address("claire.durand")

    # B publishes its doctors' certificates in its directory (mss init --demo, mss cert issue).
    ldif = tmp_path / "b.ldif"
    b.mss("directory", "export", "-o", str(ldif))
    assert "userCertificate;binary::" in ldif.read_text()
    a.mss("directory", "import", str(ldif))

    a.configure("crypto", "sign_outgoing", "true")
    a.configure("crypto", "encrypt_outgoing", '"required"')
    a.start()
    b.start()
    try:
        # Without a certificate anywhere, "required" refuses and names the recipient.
        with pytest.raises(smtplib.SMTPDataError, match=r"nobody@b\.example") as refused:
            _send(a, jean, [b.address("nobody")], b"Subject: x\r\n\r\nx\r\n")
        assert "5.7.1" in str(refused.value)

        raw = (f"From: Dr Jean Martin <{jean}>\r\nTo: <{claire}>\r\n"
               "Subject: Compte rendu chiffre\r\nMessage-ID: <x-op-1@a.example>\r\n"
               "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
               "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour Claire, le CR.\r\n"
               "--b1\r\nContent-Type: application/pdf; name=\"cr.pdf\"\r\n"
               "Content-Disposition: attachment; filename=\"cr.pdf\"\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQgY29tcHRlIHJlbmR1Cg==\r\n"
               "--b1--\r\n").encode()
        assert _send(a, jean, [claire], raw) == {}
        [stored] = _stored_inbox(b, claire)
        # Stored as received: encrypted (nothing of the text readable at rest).
        assert b"application/pkcs7-mime" in stored or b"application/x-pkcs7-mime" in stored
        assert b"Bonjour Claire" not in stored

        context = ssl.create_default_context(cafile=str(b.ca_file))
        with imaplib.IMAP4_SSL("127.0.0.1", b.ports["imaps"], ssl_context=context) as imap:
            imap.login(claire, b.passwords[claire])
            imap.select("INBOX", readonly=True)
            typ, data = imap.fetch("1", "(BODY.PEEK[])")
            assert typ == "OK"
            clear = data[0][1]
        assert b"Bonjour Claire, le CR." in clear
        message = email.message_from_bytes(clear)
        verdict = message["Authentication-Results"]
        assert verdict is not None and "smime=pass" in verdict and jean in verdict
        names = [p.get_filename() for p in message.walk() if p.get_filename()]
        assert "cr.pdf" in names and "cr.pdf.p7s" in names
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_revoked_certificate_is_withdrawn_and_not_used(instance_factory):
    a = instance_factory("a.example")
    claire = a.address("claire.durand")
    exported = a.mss("directory", "export").stdout
    assert exported.count("userCertificate;binary::") == 2  # Jean's and Claire's
    serial = json.loads(a.mss("cert", "issue", claire, "--usage", "encryption", "--json").stdout)["serial"]
    assert a.mss("directory", "export").stdout.count("userCertificate;binary::") == 3
    out = a.mss("cert", "revoke", serial).stdout
    assert "withdrawn from the directory: 1" in out
    assert a.mss("directory", "export").stdout.count("userCertificate;binary::") == 2
    a.mss("cert", "revoke", claire)
    # Claire's old encryption certificate is revoked too: nothing left to encrypt to.
    msg = a.data / "m.eml"
    msg.write_bytes(b"From: x@a.example\r\nSubject: t\r\n\r\nt\r\n")
    refused = a.mss("cert", "protect", str(msg), "--encrypt-to", claire, check=False)
    assert refused.returncode == 1 and f"no encryption certificate for {claire}" in refused.stderr
