"""EnvelopedData built and read around one ciphertext buffer, and the base64 helpers."""

from __future__ import annotations

import base64
import os

import pytest
from asn1crypto import cms as acms

from crypto import envelope, smime
from crypto.keystore import KeyStore
from mssmail import mime


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 57, 58, 57 * 2048, 57 * 2048 + 5, 300_001])
def test_b64_lines_matches_reference(size: int) -> None:
    data = os.urandom(size)
    encoded = base64.b64encode(data)
    expected = b"".join(encoded[i:i + 76] + b"\r\n" for i in range(0, len(encoded), 76))
    assert mime.b64_lines(data) == expected
    assert mime.b64_lines_into(data, b"H: v\r\n\r\n") == b"H: v\r\n\r\n" + expected


@pytest.mark.parametrize("size", [0, 5, 57 * 40_000 + 7])
@pytest.mark.parametrize("style", ["crlf", "lf", "64-columns", "no-padding"])
def test_b64_decode_into(size: int, style: str) -> None:
    data = os.urandom(size)
    text = mime.b64_lines(data)
    if style == "lf":
        text = text.replace(b"\r\n", b"\n")
    elif style == "64-columns":
        flat = base64.b64encode(data)
        text = b"".join(flat[i:i + 64] + b"\n" for i in range(0, len(flat), 64))
    elif style == "no-padding":
        text = text.replace(b"=", b"")
    buf, start, end = mime.b64_decode_into(memoryview(text), reserve=11)
    assert start == 11 and buf[start:end] == data


def test_structure_parsed_by_asn1crypto(keystore: KeyStore) -> None:
    alice = keystore.get("alice@a.example", "encryption")
    bob = keystore.get("bob@a.example", "encryption")
    der = envelope.encrypt(b"x" * 1000, [alice.certificate, bob.certificate])
    info = acms.ContentInfo.load(bytes(der))
    env = info["content"]
    assert info["content_type"].native == "enveloped_data" and env["version"].native == "v0"
    assert len(env["recipient_infos"]) == 2
    eci = env["encrypted_content_info"]
    assert eci["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"
    assert len(eci["encrypted_content"].native) == 1008
    assert len(info.dump(force=True)) == len(der)  # DER lengths are exact


@pytest.mark.parametrize("oaep", [False, True])
@pytest.mark.parametrize("size", [0, 15, 16, 1 << 20])
def test_roundtrip_pieces_and_in_place(keystore: KeyStore, oaep: bool, size: int) -> None:
    bob = keystore.get("bob@a.example", "encryption")
    data = os.urandom(size)
    pieces = [b"Content-Type: application/octet-stream\r\n", b"\r\n", memoryview(data)]
    der = envelope.encrypt(pieces, [bob.certificate], oaep=oaep)
    clear = b"".join(bytes(p) for p in pieces)
    assert envelope.decrypt(bytes(der), bob.certificate, bob.key) == clear
    buf = bytearray(b"\0" * 7) + der
    index, first, last = envelope.decrypt_in_place(buf, [(bob.certificate, bob.key)], 7)
    assert index == 0 and buf[first:last] == clear


def test_in_place_rejects_tampering(keystore: KeyStore) -> None:
    bob = keystore.get("bob@a.example", "encryption")
    der = envelope.encrypt(b"secret " * 100, [bob.certificate])
    der[-1] ^= 1
    with pytest.raises(envelope.EnvelopeError):
        envelope.decrypt_in_place(der, [(bob.certificate, bob.key)])


def test_big_message_roundtrip(keystore: KeyStore) -> None:
    bob = keystore.get("bob@a.example", "encryption")
    body = base64.b64encode(os.urandom(3_000_000))
    message = (b"From: a@a.example\r\nTo: bob@a.example\r\nSubject: big\r\n"
               b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + b"".join(body[i:i + 76] + b"\r\n" for i in range(0, len(body), 76)))
    encrypted = smime.encrypt_message(message, [bob.certificate])
    assert isinstance(encrypted, bytes)
    clear = smime.decrypt_message(encrypted, [bob])
    assert isinstance(clear, bytes)
    head, rest = clear.split(b"\r\n\r\n", 1)
    assert b"Subject: big" in head and b"MIME-Version: 1.0" in head
    assert rest == message.split(b"\r\n\r\n", 1)[1]
