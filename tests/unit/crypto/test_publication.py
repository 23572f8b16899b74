"""Choosing the certificate to encrypt to among those the directory publishes."""

from __future__ import annotations

import datetime as dt

from crypto import pki
from crypto.keystore import KeyStore
from crypto.publication import find_encryption_certificate, usable_encryption_certificate
from crypto.smime import Trust


def _trust(ks: KeyStore) -> Trust:
    return Trust(ks.anchors(), ks.crls())


def test_picks_the_valid_certificate_that_lasts_longest(keystore: KeyStore) -> None:
    ca_cert, ca_key = keystore.ca()
    short, _ = pki.issue_user_certificate(ca_cert, ca_key, "paul@b.example", "encryption", days=30)
    long, _ = pki.issue_user_certificate(ca_cert, ca_key, "paul@b.example", "encryption", days=700)
    cert, why = usable_encryption_certificate([short, long], _trust(keystore))
    assert cert == long and why == ""


def test_expired_untrusted_and_signature_only_are_refused_with_reasons(keystore: KeyStore, tmp_path) -> None:
    ca_cert, ca_key = keystore.ca()
    expired, _ = pki.issue_user_certificate(ca_cert, ca_key, "paul@b.example", "encryption", days=5,
                                            not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=20))
    signing, _ = pki.issue_user_certificate(ca_cert, ca_key, "paul@b.example", "signature")
    other_ca, other_key = pki.create_ca(tmp_path, "stranger")
    stranger, _ = pki.issue_user_certificate(other_ca, other_key, "paul@b.example", "encryption")
    cert, why = usable_encryption_certificate([expired, signing, stranger], _trust(keystore))
    assert cert is None
    assert "expired" in why and "not for encryption" in why and "no trusted issuer" in why
    assert usable_encryption_certificate([], _trust(keystore)) == (None, "no encryption certificate")


def test_revoked_own_certificate_is_not_used(tmp_path) -> None:
    pki.create_ca(tmp_path, "rev")
    ks = KeyStore(tmp_path)
    entry = ks.issue("dave@a.example", "encryption")
    assert find_encryption_certificate(ks, _trust(ks), "dave@a.example")[0] is not None
    ks.revoke(entry["serial"])
    cert, why = find_encryption_certificate(ks, _trust(ks), "dave@a.example")
    assert cert is None and "revoked" in why
    assert find_encryption_certificate(ks, _trust(ks), "nobody@a.example") == (None, "no encryption certificate")
