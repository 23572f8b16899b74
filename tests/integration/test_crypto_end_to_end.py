"""Issue 4 end to end, through the real listeners: a doctor submits a message with two
attachments; the server signs it (each attachment gets its own detached .p7s) and
encrypts it to the recipient; the recipient's store holds only ciphertext; reading it
over IMAP gives the clear message, whose signatures `openssl cms` accepts, and the
report a doctor reads says who signed and that each document is intact."""

from __future__ import annotations

import email
import hashlib
import imaplib
import json
import smtplib
import ssl
import subprocess
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(240)
DOMAIN = "a.example"
PDF = b"%PDF-1.4\n% compte rendu operatoire\n" + bytes(range(256)) * 20
HPRIM = "H|^~\\&|LABO|||\r\nP|1||Dupont^Jean\r\nR|1|GLU|5.4|mmol/l\r\n".encode("latin-1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    inst = MssInstance(tmp_path_factory.mktemp("e2e") / "a", DOMAIN)
    inst.configure("crypto", "sign_outgoing", "true")
    inst.configure("crypto", "encrypt_outgoing", '"required"')
    inst.start("smtp", "submission", "imap")
    yield inst
    assert inst.stop() == 0


def submit(inst: MssInstance, sender: str, rcpt: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = "Compte rendu et résultats de M. Dupont"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=DOMAIN)
    msg.set_content("Chère consœur,\nveuillez trouver le compte rendu et les résultats.\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="compte-rendu.pdf")
    msg.add_attachment(HPRIM, maintype="application", subtype="octet-stream", filename="resultats.hpr")
    data = msg.as_bytes(policy=policy.SMTP)
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=60) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, inst.passwords[sender])
        smtp.sendmail(sender, [rcpt], data)
    return data


def openssl_verify(signature: bytes, content: bytes, ca: Path, tmp: Path) -> subprocess.CompletedProcess:
    (tmp / "sig.der").write_bytes(signature)
    (tmp / "content.bin").write_bytes(content)
    return subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp / "sig.der"),
                           "-content", str(tmp / "content.bin"), "-CAfile", str(ca), "-purpose", "any",
                           "-out", "/dev/null"], capture_output=True, text=True)


def test_signed_per_attachment_encrypted_then_clear_on_imap_read(server: MssInstance, tmp_path: Path) -> None:
    sender, rcpt = server.address("jean.martin"), server.address("claire.durand")
    submit(server, sender, rcpt)

    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=60)
    client.starttls(ssl_context=ssl.create_default_context(cafile=str(server.ca_file)))
    client.login(rcpt, server.passwords[rcpt])
    client.select("INBOX")
    _, found = client.uid("SEARCH", "FROM", "jean.martin")
    uid = found[0].split()[-1]
    _, data = client.uid("FETCH", uid, "(BODYSTRUCTURE BODY.PEEK[])")
    clear = data[0][1]
    client.logout()

    # At rest: only ciphertext in the blob store (the recipient's key is needed to read it).
    blobs = [p for p in (server.data / "blobs").rglob("*") if p.is_file()]
    stored = [p.read_bytes() for p in blobs]
    assert not any(b"compte rendu operatoire" in b for b in stored)
    assert any(b"application/pkcs7-mime" in b.lower() and b"enveloped-data" in b.lower() for b in stored)

    # Read over IMAP: clear, with the server's verdict in Authentication-Results (RFC 7281).
    parsed = email.message_from_bytes(clear, policy=policy.default)
    results = " ".join(parsed.get_all("Authentication-Results") or [])
    assert "smime=pass" in results and sender in results, results
    parts = {part.get_filename(): part.get_payload(decode=True) for part in parsed.walk() if part.get_filename()}
    assert parts["compte-rendu.pdf"] == PDF
    assert parts["resultats.hpr"] == HPRIM
    assert "compte-rendu.pdf.p7s" in parts and "resultats.hpr.p7s" in parts

    # Each attachment's detached signature stands alone for `openssl cms -verify`.
    ca = server.ca_file
    for name, content in (("compte-rendu.pdf", PDF), ("resultats.hpr", HPRIM)):
        result = openssl_verify(parts[f"{name}.p7s"], content, ca, tmp_path)
        assert result.returncode == 0, result.stderr
        tampered = openssl_verify(parts[f"{name}.p7s"], content + b"x", ca, tmp_path)
        assert tampered.returncode != 0

    # The report a doctor reads: French, naming the signer and each document's state.
    (tmp_path / "read.eml").write_bytes(clear)
    report = server.mss("cert", "report", str(tmp_path / "read.eml")).stdout
    assert "jean.martin@a.example" in report or "Martin" in report, report
    assert "compte-rendu.pdf" in report and "resultats.hpr" in report
    verdict = json.loads(server.mss("cert", "report", str(tmp_path / "read.eml"), "--json").stdout)
    assert verdict["verdict"] == "valid", verdict
    assert {p["name"]: p["status"] for p in verdict["parts"]}["resultats.hpr"] == "intact"

    # Reading was audited, with the digest of what is stored.
    events = [json.loads(line) for line in server.mss("audit", "export").stdout.splitlines()]
    reads = [e for e in events if e["action"] == "read" and e["actor"] == rcpt]
    digests = {hashlib.sha256(b).hexdigest() for b in stored}
    assert reads and reads[-1]["details"]["sha256"] in digests


def test_required_encryption_refuses_a_recipient_without_certificate(server: MssInstance) -> None:
    """The lab's organisational mailbox has no encryption certificate in the demo."""
    sender = server.address("jean.martin")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(server, sender, server.address("laboratoire"))
    assert refused.value.smtp_code == 550
    assert b"5.7.1" in refused.value.smtp_error and b"laboratoire@a.example" in refused.value.smtp_error
