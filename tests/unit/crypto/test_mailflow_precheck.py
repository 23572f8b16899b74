"""The cheap pre-check that spares plain mail a full MIME analysis on reception."""

from __future__ import annotations

import base64
import os

import pytest

from crypto.mailflow import looks_protected


@pytest.mark.parametrize("header", [
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256',
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data",
    b"Content-Type: application/x-pkcs7-mime; name=smime.p7m",
    b"Content-Type: application/octet-stream; name=smime.p7m",
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"',
    b"Content-Type: APPLICATION/PKCS7-MIME",
])
def test_protected_messages_are_recognised(header: bytes) -> None:
    assert looks_protected(b"From: a@b.example\r\n" + header + b"\r\n\r\nbody\r\n")


def test_inline_pgp_armour_is_recognised() -> None:
    body = b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nCompte rendu\r\n"
    assert looks_protected(b"Subject: cr\r\n\r\n" + body)


def test_random_base64_attachments_are_not_mistaken_for_protected_mail() -> None:
    # Three letters such as "pgp" occur by chance in about a quarter of 10 KB base64
    # bodies; whole media types never do.
    hits = 0
    for _ in range(200):
        attachment = base64.encodebytes(os.urandom(7000))
        message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                   b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   + attachment + b"--b--\r\n")
        hits += looks_protected(message)
    assert hits == 0
