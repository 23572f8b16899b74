"""S/MIME sign/verify/encrypt/decrypt, per-attachment signatures and bad input."""

from __future__ import annotations

import base64

import pytest

from crypto import analyse, attachments, smime
from crypto import report as rep
from crypto.keystore import KeyStore
from mssmail import mime
from tests.unit.crypto.helpers import SIMPLE, message_with_attachments

pytestmark = pytest.mark.timeout(60)


def trust_of(ks: KeyStore) -> smime.Trust:
    return smime.Trust(ks.anchors(), ks.crls())


def test_detached_sign_verify(keystore: KeyStore) -> None:
    signed = smime.sign_message(SIMPLE, keystore.get("alice@a.example", "signature"))
    assert b'protocol="application/pkcs7-signature"' in signed and b"micalg=sha-256" in signed
    report, inner = smime.verify_message(signed, trust_of(keystore))
    assert report.verdict == rep.VALID
    signer = report.signers[0]
    assert signer.rpps == "10003456787" and signer.email == "alice@a.example"
    assert signer.revocation == "good" and signer.signing_time
    assert inner.endswith(b"le patient va bien.\r\n")


def test_opaque_sign_verify(keystore: KeyStore) -> None:
    signed = smime.sign_message(SIMPLE, keystore.get("alice@a.example", "signature"), detached=False)
    assert smime.is_smime(signed) == "opaque"
    report, clear = analyse.analyse_message(signed, trust_of(keystore))
    assert report.verdict == rep.VALID and b"le patient va bien" in clear


def test_tampered_body_detected(keystore: KeyStore) -> None:
    signed = smime.sign_message(SIMPLE, keystore.get("alice@a.example", "signature"))
    report, _ = smime.verify_message(signed.replace(b"va bien", b"va mal!"), trust_of(keystore))
    assert report.verdict == rep.TAMPERED
    assert report.parts[0].status == rep.PART_TAMPERED


def test_unknown_issuer_not_valid(keystore: KeyStore) -> None:
    signed = smime.sign_message(SIMPLE, keystore.get("alice@a.example", "signature"))
    report, _ = smime.verify_message(signed, smime.Trust([], []))
    assert report.verdict == rep.UNTRUSTED
    assert report.signers[0].chain_status == "unknown-issuer"


@pytest.mark.parametrize("damage", ["truncate", "flip", "flip-cert", "garbage", "empty"])
def test_corrupted_cms_is_invalid_not_crash(keystore: KeyStore, damage: str) -> None:
    der = smime.sign_bytes(b"content", keystore.get("alice@a.example", "signature"))
    bad = {"truncate": der[: len(der) // 2], "flip": der[:-10] + bytes([der[-10] ^ 0x01]) + der[-9:],
           "flip-cert": der[:300] + bytes([der[300] ^ 0x01]) + der[301:],
           "garbage": b"\x30\x82\xff\xff" + b"A" * 50, "empty": b""}[damage]
    reports = smime.verify_detached(b"content", bad, trust_of(keystore), ["x"])
    assert reports and all(r.status != rep.VALID for r in reports)


def test_encrypt_to_several_recipients_and_decrypt(keystore: KeyStore) -> None:
    alice = keystore.get("alice@a.example", "encryption")
    bob = keystore.get("bob@a.example", "encryption")
    encrypted = smime.encrypt_message(SIMPLE, [alice.certificate, bob.certificate])
    assert b"le patient" not in encrypted
    for cred in (alice, bob):
        assert b"le patient va bien" in smime.decrypt_message(encrypted, [cred])


def test_wrong_key_gives_clear_error(keystore: KeyStore) -> None:
    bob = keystore.get("bob@a.example", "encryption")
    alice = keystore.get("alice@a.example", "encryption")
    encrypted = smime.encrypt_message(SIMPLE, [bob.certificate])
    with pytest.raises(smime.SmimeError, match="not encrypted to any key"):
        smime.decrypt_message(encrypted, [alice])
    report, clear = analyse.analyse_message(encrypted, trust_of(keystore), [alice])
    assert report.encrypted and report.decrypted is False and clear.startswith(b"From:")
    assert report.verdict != rep.VALID


def test_attachment_signatures_name_the_tampered_one(keystore: KeyStore) -> None:
    alice = keystore.get("alice@a.example", "signature")
    protected = attachments.protect(message_with_attachments(), alice)
    assert protected.count(b"application/pkcs7-signature") == 2
    assert b'filename="resultats.pdf.p7s"' in protected
    parts, signers = attachments.verify(protected, trust_of(keystore))
    assert {p.name: p.status for p in parts} == {"resultats.pdf": "intact", "compte-rendu.txt": "intact"}
    assert all(s.status == rep.VALID for s in signers)
    # Change one byte of the decoded PDF.
    original = base64.b64encode(b"%PDF-1.4 resultats ")[:20]
    changed = base64.b64encode(b"%PDF-1.5 resultats ")[:20]
    tampered = protected.replace(original, changed, 1)
    assert tampered != protected
    parts, _ = attachments.verify(tampered, trust_of(keystore))
    assert {p.name: p.status for p in parts} == {"resultats.pdf": "tampered", "compte-rendu.txt": "intact"}


def test_full_pipeline_sign_per_attachment_and_encrypt(keystore: KeyStore) -> None:
    alice = keystore.get("alice@a.example", "signature")
    bob = keystore.get("bob@a.example", "encryption")
    out = analyse.protect_message(message_with_attachments(), alice, [bob.certificate])
    assert smime.is_smime(out) == "enveloped" and b"Subject: Documents" in out
    report, clear = analyse.analyse_message(out, trust_of(keystore), [bob])
    assert report.verdict == rep.VALID and report.encrypted and report.decrypted
    names = [(p.name, p.kind, p.status) for p in report.parts]
    assert names == [("corps du message", "message", "intact"),
                     ("resultats.pdf", "attachment", "intact"),
                     ("compte-rendu.txt", "attachment", "intact")]
    assert b"multipart/signed" in clear
    text = rep.render_fr(report)
    assert "Verdict : VALIDE" in text and "Identifiant RPPS : 10003456787" in text
    assert "resultats.pdf (pièce jointe) : intègre" in text


def test_report_roundtrip_dict(keystore: KeyStore) -> None:
    signed = smime.sign_message(SIMPLE, keystore.get("alice@a.example", "signature"))
    report, _ = smime.verify_message(signed, trust_of(keystore))
    again = rep.SignatureReport.from_dict(report.to_dict())
    assert again == report


def test_multipart_parts_exact_bytes() -> None:
    body = b"pre\r\n--b\r\nA\r\n\r\nx\r\n--b\r\n\r\ny\r\n\r\n--b--\r\nepilogue"
    assert mime.multipart_parts(body, "b") == [b"A\r\n\r\nx", b"\r\ny\r\n"]


def test_expired_signer_reported_expired(keystore: KeyStore) -> None:
    import datetime as dt

    signed = smime.sign_message(SIMPLE, keystore.get("alice@a.example", "signature"))
    later = smime.Trust(keystore.anchors(), keystore.crls(), at=dt.datetime.now(dt.UTC) + dt.timedelta(days=4000))
    report, _ = smime.verify_message(signed, later)
    assert report.verdict == rep.EXPIRED and "expired" in report.signers[0].detail
    earlier = smime.Trust(keystore.anchors(), keystore.crls(), at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    report, _ = smime.verify_message(signed, earlier)
    assert report.verdict == rep.INVALID and "future" in report.signers[0].detail


def test_signer_must_match_from(keystore: KeyStore) -> None:
    signed = smime.sign_message(SIMPLE.replace(b"From: alice@a.example", b"From: Bob <bob@a.example>"),
                                keystore.get("alice@a.example", "signature"))
    report, _ = analyse.analyse_message(signed, trust_of(keystore))
    assert report.verdict == rep.UNTRUSTED
    assert "not for the sender bob@a.example" in report.signers[0].detail
