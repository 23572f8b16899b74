"""PKI: per-usage certificates, keys at rest, revocation, chain validation, import."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto import chain, pki
from crypto.keystore import KeyStore, PkiError

pytestmark = pytest.mark.timeout(60)


def test_usages_have_separate_keys_and_right_extensions(keystore: KeyStore) -> None:
    sig = keystore.get("alice@a.example", "signature")
    enc = keystore.get("alice@a.example", "encryption")
    assert sig and enc and sig.key and enc.key
    assert sig.certificate.public_key() != enc.certificate.public_key()
    ku = sig.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_encipherment
    ku = enc.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_encipherment and not ku.digital_signature
    eku = sig.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert sig.certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "10003456787"
    san = sig.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@a.example"]


def test_keys_encrypted_at_rest_with_owner_only_mode(keystore: KeyStore) -> None:
    key_file = keystore.dir / "users" / "alice@a.example" / "signature.key"
    data = key_file.read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in data
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, password=None)
    for path in (key_file, keystore.dir / "master.key"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_tls_usage_for_authentication(keystore: KeyStore) -> None:
    keystore.issue("carol@a.example", "tls")
    cred = keystore.get("carol@a.example", "tls")
    assert cred is not None
    result = chain.validate(cred.certificate, [], keystore.anchors(), keystore.crls(), "tls")
    assert result.ok
    bad = chain.validate(cred.certificate, [], keystore.anchors(), keystore.crls(), "signature")
    assert bad.status == chain.BAD_USAGE


def test_valid_chain_with_crl(keystore: KeyStore) -> None:
    cred = keystore.get("bob@a.example", "signature")
    assert cred is not None
    result = chain.validate(cred.certificate, cred.chain, keystore.anchors(), keystore.crls())
    assert result.status == chain.VALID and result.revocation == chain.REV_GOOD
    no_crl = chain.validate(cred.certificate, cred.chain, keystore.anchors(), [])
    assert no_crl.ok and no_crl.revocation == chain.REV_UNKNOWN


def test_revoked_by_crl(tmp_path) -> None:
    pki.create_ca(tmp_path, "rev")
    ks = KeyStore(tmp_path)
    entry = ks.issue("dave@a.example", "signature")
    cred = ks.get("dave@a.example", "signature")
    assert cred is not None
    assert ks.revoke(entry["serial"]) == [entry["serial"]]
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cred.certificate.serial_number) is not None
    result = chain.validate(cred.certificate, [], ks.anchors(), ks.crls())
    assert result.status == chain.REVOKED
    assert [e["revoked"] for e in ks.index()] == [True]
    with pytest.raises(PkiError):
        ks.revoke("nobody@a.example")


def test_expired_and_unknown_issuer(keystore: KeyStore, tmp_path) -> None:
    ca_cert, ca_key = keystore.ca()
    old, _ = pki.issue_user_certificate(ca_cert, ca_key, "old@a.example", "signature", days=10,
                                        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    assert chain.validate(old, [], keystore.anchors(), []).status == chain.EXPIRED
    other_cert, other_key = pki.create_ca(tmp_path, "other")
    stranger, _ = pki.issue_user_certificate(other_cert, other_key, "x@b.example", "signature")
    result = chain.validate(stranger, [], keystore.anchors(), [])
    assert result.status == chain.UNKNOWN_ISSUER
    # `mss cert trust` makes it trusted.
    ks2 = KeyStore(keystore.dir.parent / "trust-test")
    ks2.add_trust((tmp_path / "ca.pem").read_bytes())
    assert chain.validate(stranger, [], ks2.anchors(), []).ok


def test_pkcs12_import(keystore: KeyStore, tmp_path) -> None:
    ca_cert, ca_key = keystore.ca()
    cert, key = pki.issue_user_certificate(ca_cert, ca_key, "eve@a.example", "encryption")
    blob = pkcs12.serialize_key_and_certificates(
        b"eve", key, cert, [ca_cert], serialization.BestAvailableEncryption(b"s3cret"))
    with pytest.raises(PkiError):
        keystore.import_pkcs12("eve@a.example", blob, b"wrong")
    entry = keystore.import_pkcs12("eve@a.example", blob, b"s3cret")
    assert entry["usage"] == "encryption" and entry["source"] == "imported"
    cred = keystore.get("eve@a.example", "encryption")
    assert cred is not None and cred.certificate == cert and cred.chain == [ca_cert]
    with pytest.raises(PkiError):
        keystore.import_pkcs12("eve@a.example", b"garbage", b"x")


def _intermediate(root_cert, root_key, ca: bool = True):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate" if ca else "Not a CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(root_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    return cert, key


def _root():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Racine"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Racine")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def test_three_level_chain_like_a_real_pki(tmp_path) -> None:
    from crypto import report as rep
    from crypto import smime
    from crypto.keystore import Credential

    dev_cert, dev_key = pki.create_ca(tmp_path / "dev", "Dev")  # pathLenConstraint 0
    dev_mid, dev_mid_key = _intermediate(dev_cert, dev_key)
    dev_leaf, _ = pki.issue_user_certificate(dev_mid, dev_mid_key, "x@a.example", "signature")
    assert chain.validate(dev_leaf, [dev_mid], [dev_cert], []).status == chain.BAD_CHAIN
    root_cert, root_key = _root()
    mid_cert, mid_key = _intermediate(root_cert, root_key)
    leaf, leaf_key = pki.issue_user_certificate(mid_cert, mid_key, "doc@a.example", "signature", rpps="123")
    assert chain.validate(leaf, [mid_cert], [root_cert], []).ok
    assert chain.validate(leaf, [], [root_cert], []).status == chain.UNKNOWN_ISSUER
    cred = Credential("doc@a.example", "signature", leaf, [mid_cert], leaf_key)
    signed = smime.sign_message(b"From: doc@a.example\r\nSubject: x\r\n\r\nbody\r\n", cred)
    report, _ = smime.verify_message(signed, smime.Trust([root_cert], []))
    assert report.verdict == rep.VALID and len(report.signers[0].chain) == 3
    # A non-CA certificate cannot issue.
    fake_cert, fake_key = _intermediate(root_cert, root_key, ca=False)
    forged, _ = pki.issue_user_certificate(fake_cert, fake_key, "evil@a.example", "signature")
    assert chain.validate(forged, [fake_cert], [root_cert], []).status == chain.BAD_CHAIN
