"""Hole 13: never sign with what should not sign.

With `sign_outgoing` on, a doctor whose signature certificate was revoked (a stolen
card, a left colleague) or has expired must not send mail signed with it: the message
is refused with a reply that says why ([crypto] unusable_signer = "refuse", the
default) or goes out unsigned ("send-unsigned"), and the log says so either way. `mss
check` names the certificates in use that are revoked, expired or about to expire.
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(240)

DOMAIN = "a.example"
SENDER = f"jean.martin@{DOMAIN}"
RCPT = f"claire.durand@{DOMAIN}"


def _submit(inst: MssInstance, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, RCPT, subject
    msg.set_content("Compte rendu de consultation.\n")
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=60) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(inst.ca_file)))
        smtp.login(SENDER, inst.passwords[SENDER])
        smtp.sendmail(SENDER, [RCPT], msg.as_bytes())


def _stored(inst: MssInstance, subject: str) -> bytes:
    found = [p.read_bytes() for p in (inst.data / "blobs").glob("??/*") if subject.encode() in p.read_bytes()]
    assert found, f"no stored message with subject {subject}"
    return found[0]


def _log_events(inst: MssInstance, name: str) -> list[dict]:
    lines = (inst.data / "logs" / "mss.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def _signature_serial(inst: MssInstance) -> str:
    entries = json.loads(inst.mss("cert", "list", "--json").stdout)
    return next(e["serial"] for e in entries if e["address"] == SENDER and e["usage"] == "signature")


def test_revoked_signer_is_refused_then_sent_unsigned_by_policy(tmp_path: Path) -> None:
    inst = MssInstance(tmp_path / "a", DOMAIN)
    inst.configure("crypto", "sign_outgoing", "true")
    if not any(e["address"] == SENDER and e["usage"] == "signature"
               for e in json.loads(inst.mss("cert", "list", "--json").stdout)):
        inst.mss("cert", "issue", SENDER, "--usage", "signature")
    inst.start("smtp", "submission")
    try:
        _submit(inst, "Avant revocation")
        assert b"application/pkcs7-signature" in _stored(inst, "Avant revocation")

        serial = _signature_serial(inst)
        # `mss cert list` shows the serial `mss cert revoke` takes.
        listed = inst.mss("cert", "list").stdout
        assert serial in listed
        assert f"revoked {serial}" in inst.mss("cert", "revoke", serial).stdout

        with pytest.raises(smtplib.SMTPDataError) as refused:
            _submit(inst, "Apres revocation")
        assert refused.value.smtp_code == 550
        assert b"revoked" in refused.value.smtp_error
        assert not any(b"Apres revocation" in p.read_bytes() for p in (inst.data / "blobs").glob("??/*"))
        events = _log_events(inst, "signing.refused")
        assert events and events[-1]["serial"] == serial and events[-1]["action"] == "refused"

        check = inst.mss("check", check=False)
        assert check.returncode == 1
        assert f"signature certificate {serial} of {SENDER} is revoked" in check.stdout
    finally:
        inst.stop()

    inst.configure("crypto", "unusable_signer", '"send-unsigned"')
    inst.start("smtp", "submission")
    try:
        _submit(inst, "Sans signature")
        stored = _stored(inst, "Sans signature")
        assert b"pkcs7" not in stored.lower()
        assert _log_events(inst, "signing.refused")[-1]["action"] == "unsigned"
    finally:
        inst.stop()


def test_check_reports_expired_and_expiring_certificates(tmp_path: Path) -> None:
    from crypto import pki
    from crypto.keystore import KeyStore

    inst = MssInstance(tmp_path / "b", DOMAIN)
    ks = KeyStore(inst.data / "pki")
    ca_cert, ca_key = ks.ca()
    now = dt.datetime.now(dt.UTC)
    expired, key = pki.issue_user_certificate(ca_cert, ca_key, RCPT, "signature", days=1,
                                              not_before=now - dt.timedelta(days=3), key_size=2048)
    ks.save(RCPT, "signature", expired, key, [ca_cert], "issued")
    inst.mss("cert", "issue", f"laboratoire@{DOMAIN}", "--usage", "encryption", "--days", "10")
    check = inst.mss("check", check=False)
    assert check.returncode == 1
    serial = format(expired.serial_number, "x")
    assert f"signature certificate {serial} of {RCPT} expired on" in check.stdout
    assert "encryption certificate" in check.stdout and "expires in" in check.stdout
    # The expired one cannot sign on demand either.
    (tmp_path / "m.eml").write_bytes(b"From: " + RCPT.encode() + b"\r\nSubject: x\r\n\r\nx\r\n")
    protect = inst.mss("cert", "protect", str(tmp_path / "m.eml"), "--sign-as", RCPT, check=False)
    assert protect.returncode == 1 and "expired" in protect.stderr
