"""Hole 9: integrity that can be checked.

An attacker (or a failing disk) changes one byte of a stored message: IMAP must refuse
to serve it, say so in the audit trail, and `mss audit verify --blobs` must find it. An
attacker who can write the database rewrites an audit event and re-hashes the chain:
without the HMAC key kept outside the database the chain no longer verifies, and even
with it the chain no longer matches a signed checkpoint taken before.
"""

from __future__ import annotations

import hashlib
import hmac
import imaplib
import json
import smtplib
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(240)

DOMAIN = "a.example"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MssInstance]:
    instance = MssInstance(tmp_path_factory.mktemp("integrity") / "a", DOMAIN)
    instance.configure("audit", "checkpoint_interval", '"1s"')
    # The MX takes mail from the space of trust, never "from" our own domain (hole 3).
    instance.configure("trust", "domains", '["b.example"]')
    instance.start("smtp", "imap")
    yield instance
    instance.stop()


def _deliver(inst: MssInstance, subject: str) -> None:
    body = (f"From: <dr.x@b.example>\r\nTo: <jean.martin@{DOMAIN}>\r\n"
            f"Subject: {subject}\r\n\r\nCompte rendu: potassium 4.1 mmol/L.\r\n")
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("dr.x@b.example", [f"jean.martin@{DOMAIN}"], body.encode())


def _blob_of(inst: MssInstance, text: bytes) -> Path:
    for path in (inst.data / "blobs").glob("??/*"):
        if text in path.read_bytes():
            return path
    raise AssertionError("the delivered message's file was not found")


def _imap(inst: MssInstance) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", inst.ports["imap"], timeout=30)
    imap.starttls(ssl_context=ssl.create_default_context(cafile=str(inst.ca_file)))
    imap.login(f"jean.martin@{DOMAIN}", inst.passwords[f"jean.martin@{DOMAIN}"])
    imap.select("INBOX")
    return imap


def _events(inst: MssInstance) -> list[dict]:
    out = inst.mss("audit", "export").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_changed_byte_is_refused_over_imap_and_audited(inst: MssInstance) -> None:
    _deliver(inst, "Integrite 1")
    blob = _blob_of(inst, b"Integrite 1")
    imap = _imap(inst)
    try:
        typ, data = imap.uid("SEARCH", "SUBJECT", "Integrite 1")
        uid = data[0].split()[-1]
        typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK" and b"potassium 4.1" in data[0][1]
        # One byte changed on disk, as a tampering hand or a failing disk would.
        raw = blob.read_bytes()
        blob.chmod(0o600)
        blob.write_bytes(raw.replace(b"potassium 4.1", b"potassium 9.1"))
        typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        # Refused with RFC 5530's CORRUPTION code, and none of the changed bytes served.
        assert typ == "NO" and b"[CORRUPTION]" in data[0], data
        assert not any(b"potassium 9.1" in (part[1] if isinstance(part, tuple) else part or b"")
                       for part in data)
    finally:
        imap.logout()
    failures = [e for e in _events(inst) if e["action"] == "integrity.failure"]
    assert failures and failures[-1]["message"] == blob.name
    assert failures[-1]["details"]["actual"] == hashlib.sha256(blob.read_bytes()).hexdigest()
    # The operator's log says so too, one JSON line.
    lines = [json.loads(line) for line in (inst.data / "logs" / "mss.log").read_text().splitlines()]
    assert any(line["event"] == "integrity.failure" and line["sha256"] == blob.name for line in lines)
    # ... and `audit verify --blobs` finds it (the chain itself is intact).
    result = inst.mss("audit", "verify", "--blobs", check=False)
    assert result.returncode == 1
    assert blob.name in result.stderr and "damaged" in result.stderr
    assert "audit chain intact" in result.stdout
    blob.write_bytes(raw)  # repaired: every check passes again
    assert inst.mss("audit", "verify", "--blobs").returncode == 0


def _rewrite_event(db: Path, seq: int, key: bytes | None) -> None:
    """What an attacker with write access to the database does: change one event and
    recompute every hash after it (keyed with `key` when they also stole it)."""
    from mssmail.audit import GENESIS, _canonical

    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT seq, ts, action, actor, mailbox, message_ref, remote_ip, details "
                           "FROM audit_events ORDER BY seq").fetchall()
        prev = GENESIS
        for row in rows:
            s, ts, action, actor, mailbox, message, ip, details = row
            details_obj = json.loads(details) if details else {}
            if s == seq:
                actor = "someone.else@a.example"
                con.execute("UPDATE audit_events SET actor = ? WHERE seq = ?", (actor, s))
            stamp = ts.replace(" ", "T") + ("+00:00" if "+" not in ts else "")
            fields = {"seq": s, "ts": stamp, "action": action, "actor": actor, "mailbox": mailbox,
                      "message": message, "ip": ip, "details": details_obj}
            message_bytes = prev.encode() + b"\n" + _canonical(fields)
            digest = (hmac.new(key, message_bytes, hashlib.sha256).hexdigest() if key
                      else hashlib.sha256(message_bytes).hexdigest())
            con.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, s))
            prev = digest
        con.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))
        con.commit()
    finally:
        con.close()


def test_rewritten_chain_fails_without_the_key_and_against_a_checkpoint(tmp_path: Path) -> None:
    inst = MssInstance(tmp_path / "b", DOMAIN)
    db = inst.data / "mss.db"
    assert inst.mss("audit", "verify").returncode == 0
    written = inst.mss("audit", "checkpoint").stdout
    checkpoint = Path(written.rsplit(" to ", 1)[1].strip())
    assert json.loads(checkpoint.read_text())["seq"] >= 2
    assert inst.mss("audit", "verify", "--checkpoint", str(checkpoint)).returncode == 0
    original = db.read_bytes()

    # Re-hashed without the key (a plain SHA-256 chain, as before anchoring): refused.
    _rewrite_event(db, 1, None)
    plain = inst.mss("audit", "verify", check=False)
    assert plain.returncode == 1 and "event 1" in plain.stderr
    checked = inst.mss("check", check=False)  # `mss check` no longer says all is well
    assert checked.returncode == 1 and "audit chain broken at event 1" in checked.stdout

    # Re-hashed with the stolen HMAC key: the chain verifies, the checkpoint does not.
    db.write_bytes(original)
    key_text = (inst.data / "pki" / "audit.key").read_text()
    key = bytes.fromhex(next(line[4:] for line in key_text.splitlines() if line.startswith("key=")))
    _rewrite_event(db, 1, key)
    assert inst.mss("audit", "verify").returncode == 0
    against = inst.mss("audit", "verify", "--checkpoint", str(checkpoint), check=False)
    assert against.returncode == 1 and "rewritten" in against.stderr

    # A forged checkpoint (the new head, signed with another key) is not accepted either.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mssmail.audit import _checkpoint_payload

    forged = json.loads(checkpoint.read_text())
    con = sqlite3.connect(db)
    forged["hash"] = con.execute("SELECT hash FROM audit_events WHERE seq = ?", (forged["seq"],)).fetchone()[0]
    con.close()
    import base64

    forged["signature"] = base64.b64encode(Ed25519PrivateKey.generate().sign(_checkpoint_payload(forged))).decode()
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    result = inst.mss("audit", "verify", "--checkpoint", str(tmp_path / "forged.json"), check=False)
    assert result.returncode == 1 and "signature" in result.stderr


def test_the_server_writes_signed_checkpoints_on_its_schedule(inst: MssInstance) -> None:
    _deliver(inst, "Checkpoint")
    deadline = time.monotonic() + 30
    written: list[Path] = []
    while time.monotonic() < deadline and not written:
        written = sorted((inst.data / "audit").glob("checkpoint-*.json"))
        time.sleep(0.5)
    assert written, "no checkpoint written by mss serve"
    assert inst.mss("audit", "verify", "--checkpoint", str(written[-1])).returncode == 0
    lines = [json.loads(line) for line in (inst.data / "logs" / "mss.log").read_text().splitlines()]
    logged = [Path(line["path"]) for line in lines if line["event"] == "audit.checkpoint"]
    assert logged and all(path.exists() for path in logged)
