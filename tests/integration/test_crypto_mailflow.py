"""The crypto mail-flow filters against a real store (SQLite and PostgreSQL).

The SMTP hooks module (mssmail/smtp/hooks.py) and the IMAP server did not exist when
this was written: these tests drive crypto.mailflow's filters and the store's view
filter directly, with the real store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto import analyse, mailflow, pki, smime
from crypto import report as rep
from crypto.context import trust_for
from crypto.keystore import KeyStore
from mssmail.config import load_config
from mssmail.store.actors import Actor
from mssmail.store.models import Mailbox
from tests.unit.crypto.helpers import message_with_attachments

pytestmark = pytest.mark.timeout(120)

ALICE, BOB, CAROL = "alice@a.example", "bob@a.example", "carol@a.example"


@pytest.fixture
def setup(store, tmp_path: Path):
    data = tmp_path / "data"
    (data / "pki").mkdir(parents=True)
    pki.create_ca(data / "pki", "mss a.example")
    ks = KeyStore(data / "pki")
    for who, rpps in ((ALICE, "10003456787"), (BOB, "10005678905")):
        ks.issue(who, "signature", rpps=rpps)
        ks.issue(who, "encryption", rpps=rpps)
    ks.write_crl()
    for who in (ALICE, BOB, CAROL):
        store.create_mailbox(who, "personal", password="x" * 12)
    config = load_config(data, environ={"MSS_SERVER_DOMAIN": "a.example", "MSS_SERVER_HOSTNAME": "mx.a.example",
                                        "MSS_CRYPTO_SIGN_OUTGOING": "true",
                                        "MSS_CRYPTO_ENCRYPT_OUTGOING": "required"})
    return config, ks


def message_to(rcpt: str) -> bytes:
    return message_with_attachments().replace(b"To: bob@a.example", f"To: {rcpt}".encode())


def test_submission_signs_per_attachment_and_encrypts_then_reception_verifies(store, setup) -> None:
    config, ks = setup
    out = mailflow.protect_outgoing(config, store, ALICE, [BOB], message_with_attachments(), ks)
    assert smime.is_smime(out) == "enveloped" and b"resultats" not in out
    forged = b"Authentication-Results: mx.a.example; smime=pass (forged)\r\n" \
             b"Authentication-Results: other.example; spf=pass\r\n" + out
    received, extra = mailflow.check_incoming(config, [BOB], forged, ks)
    assert received.startswith(b"Authentication-Results: mx.a.example;")
    assert b"forged" not in received and b"other.example; spf=pass" in received
    first = received.split(b"\r\n\r\n", 1)[0].split(b"\r\nAuthentication-Results: other")[0]
    assert b"smime=pass" in first and b"body.smime-identifier=alice@a.example" in first
    report = rep.SignatureReport.from_dict(extra["signature_report"])
    assert report.verdict == rep.VALID and report.decrypted
    assert [(p.name, p.status) for p in report.parts] == [
        ("corps du message", "intact"), ("resultats.pdf", "intact"), ("compte-rendu.txt", "intact")]
    outcome = store.deliver(received, [BOB], sender=ALICE, extra=extra)[BOB]
    assert outcome.ok
    # Stored bytes stay encrypted; the reader's view is clear (decrypt on read).
    store.view_filters.append(mailflow.view_filter_for(config, ks))
    blob = store.blobs.read(store_sha(store, BOB))
    assert blob == received and b"resultats" not in blob
    view = store.view(BOB, received, extra)
    assert b"X-MSS-Decrypted" in view and b"Authentication-Results: mx.a.example" in view
    view_report, _ = analyse.analyse_message(view, trust_for(config, ks))
    assert view_report.verdict == rep.VALID
    assert {p.name for p in view_report.parts} == {"corps du message", "resultats.pdf", "compte-rendu.txt"}
    # Carol has no key for it: she sees the encrypted bytes.
    assert store.view(CAROL, received, extra) == received


def store_sha(store, address: str) -> str:
    from sqlalchemy import select

    from mssmail.store.models import Folder, Message

    with store.db.read() as s:
        return s.execute(select(Message.blob_sha256).join(Folder).join(Mailbox)
                         .where(Mailbox.address == address)).scalars().first()


def test_required_encryption_refuses_naming_the_recipient(store, setup) -> None:
    config, ks = setup
    with pytest.raises(mailflow.PolicyRefusal) as refused:
        mailflow.protect_outgoing(config, store, ALICE, [BOB, CAROL], message_to(CAROL), ks)
    assert refused.value.code == 550 and refused.value.text.startswith("5.7.1")
    assert CAROL in refused.value.text and BOB not in refused.value.text


def test_when_possible_and_per_mailbox_settings(store, setup) -> None:
    config, ks = setup
    config.crypto.encrypt_outgoing = "when-possible"
    out = mailflow.protect_outgoing(config, store, ALICE, [CAROL], message_to(CAROL), ks)
    assert smime.is_smime(out) == "signed"  # Carol has no certificate: signed, in clear
    store.update_mailbox_settings(Actor.admin("test"), ALICE, {"sign_outgoing": False, "encrypt_outgoing": "never"})
    untouched = mailflow.protect_outgoing(config, store, ALICE, [BOB], message_to(BOB), ks)
    assert untouched == message_to(BOB)


def test_reception_verdicts_fail_and_policy(store, setup) -> None:
    config, ks = setup
    signed = smime.sign_message(message_with_attachments(), ks.get(ALICE, "signature"))
    tampered = signed.replace(b"ci-joint", b"ci-JOINT")
    received, extra = mailflow.check_incoming(config, [BOB], tampered, ks)
    assert b"smime=fail" in received.split(b"\r\n\r\n")[0]
    assert extra["signature_report"]["verdict"] == rep.TAMPERED
    ks.revoke(ALICE)
    received, extra = mailflow.check_incoming(config, [BOB], signed, ks)
    assert b"smime=policy" in received.split(b"\r\n\r\n")[0]
    assert extra["signature_report"]["verdict"] == rep.REVOKED
    plain, extra = mailflow.check_incoming(config, [BOB], message_with_attachments(), ks)
    assert not plain.startswith(b"Authentication-Results") and extra == {}


def test_install_registers_view_filter_once_and_filters_work(store, setup, monkeypatch) -> None:
    """In-process install: the process-wide delivery filter lists get fresh copies for the
    test, so the filters bound to this test's store (and its database, dropped after it)
    are not left registered for the tests that follow."""
    from mssmail.delivery import filters

    monkeypatch.setattr(filters, "submission_filters", [])
    monkeypatch.setattr(filters, "inbound_filters", [])
    config, _ = setup
    before = len(store.view_filters)
    mailflow.install(store, config)
    mailflow.install(store, config)
    assert len(store.view_filters) == before + 1
    submit = mailflow.submission_filter(config, store)
    with pytest.raises(Exception) as refused:
        submit(ALICE, [CAROL], message_to(CAROL))
    assert "5.7.1" in str(refused.value) and CAROL in str(refused.value)
    sent = submit(ALICE, [BOB], message_with_attachments())
    received, extra = mailflow.inbound_filter(config)(ALICE, [BOB], sent)
    assert extra["signature_report"]["verdict"] == rep.VALID
    assert b"smime=pass" in received.split(b"\r\n\r\n")[0]
