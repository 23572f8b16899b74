"""Property tests: the parsers give a verdict on any input, never crash, never "valid"."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import analyse, cms, smime
from crypto import report as rep
from crypto.keystore import KeyStore
from mssmail import mime
from tests.unit.crypto.helpers import SIMPLE, message_with_attachments

pytestmark = pytest.mark.timeout(120)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=2000))
def test_signed_data_parser_on_garbage(data: bytes) -> None:
    result = cms.verify_signed_data(data, b"content")
    assert result.status != cms.SIG_OK


@FUZZ
@given(st.binary(max_size=3000))
def test_analyse_on_garbage_messages(data: bytes) -> None:
    report, clear = analyse.analyse_message(data, smime.Trust([], []))
    assert report.verdict != rep.VALID
    assert isinstance(clear, bytes)


@FUZZ
@given(st.binary(max_size=500), st.text(min_size=1, max_size=20))
def test_multipart_parts_total(body: bytes, boundary: str) -> None:
    parts = mime.multipart_parts(mime.canonical(body), boundary)
    assert all(isinstance(p, bytes) for p in parts)


@pytest.fixture(scope="module")
def signed_samples(keystore: KeyStore) -> list[bytes]:
    alice = keystore.get("alice@a.example", "signature")
    bob = keystore.get("bob@a.example", "encryption")
    return [smime.sign_message(SIMPLE, alice), smime.sign_message(SIMPLE, alice, detached=False),
            analyse.protect_message(message_with_attachments(), alice, [bob.certificate])]


@FUZZ
@given(st.integers(min_value=0, max_value=2), st.integers(min_value=0), st.integers(min_value=1, max_value=255),
       st.booleans())
def test_mutated_signed_messages_never_valid_unless_unchanged(
        keystore: KeyStore, signed_samples: list[bytes], which: int, pos: int, xor: int, truncate: bool) -> None:
    original = signed_samples[which]
    header_end = original.find(b"\r\n\r\n") + 4
    pos = header_end + pos % (len(original) - header_end)
    mutated = original[:pos] if truncate else original[:pos] + bytes([original[pos] ^ xor]) + original[pos + 1:]
    trust = smime.Trust(keystore.anchors(), keystore.crls())
    report, _ = analyse.analyse_message(mutated, trust, [keystore.get("bob@a.example", "encryption")])
    if report.verdict == rep.VALID:
        # Only mutations that do not change what was signed may keep the verdict:
        # base64 whitespace/line structure, the preamble, or unsigned CMS fields.
        _, clear_original = analyse.analyse_message(original, trust, [keystore.get("bob@a.example", "encryption")])
        _, clear_mutated = analyse.analyse_message(mutated, trust, [keystore.get("bob@a.example", "encryption")])
        assert _signed_content(clear_mutated) == _signed_content(clear_original)


def _signed_content(message: bytes) -> bytes:
    """The first part of a multipart/signed message (what the signature covers)."""
    kind = smime.is_smime(message)
    if kind != "signed":
        return message.split(b"\r\n\r\n", 1)[-1]
    header_block, body = mime.split_entity(message)
    boundary = mime.parse_headers(header_block).boundary()
    return mime.multipart_parts(body, boundary)[0]


@FUZZ
@given(st.binary(max_size=2000))
def test_envelope_decrypt_on_garbage(keystore: KeyStore, data: bytes) -> None:
    from crypto import envelope

    bob = keystore.get("bob@a.example", "encryption")
    with pytest.raises(envelope.EnvelopeError):
        envelope.decrypt(data, bob.certificate, bob.key)


@FUZZ
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_envelope_decrypt_mutated_never_silently_wrong(keystore: KeyStore, pos: int, xor: int) -> None:
    from crypto import envelope

    bob = keystore.get("bob@a.example", "encryption")
    der = smime.encrypt_bytes(b"secret " * 40, [bob.certificate])
    pos %= len(der)
    mutated = der[:pos] + bytes([der[pos] ^ xor]) + der[pos + 1:]
    try:
        clear = envelope.decrypt(mutated, bob.certificate, bob.key)
    except envelope.EnvelopeError:
        return
    # CBC has no integrity: a mutation may go unnoticed only outside the ciphertext
    # (unused fields) or by altering the plaintext; it never raises anything else.
    assert isinstance(clear, bytearray)


@FUZZ
@given(st.lists(st.sampled_from(["mx.a.example", "MX.A.EXAMPLE", "other.example", "mx.a.example.evil", ""]),
                max_size=4), st.text(alphabet="abc =;()", max_size=20))
def test_strip_our_results(ids: list[str], tail: str) -> None:
    from crypto import mailflow

    headers = b"".join(f"Authentication-Results: {i}; {tail}\r\n".encode() for i in ids)
    out = mailflow.strip_our_results(headers + b"Subject: x\r\n\r\nbody\r\n", "mx.a.example")
    kept = [line for line in out.split(b"\r\n") if line.startswith(b"Authentication-Results")]
    assert len(kept) == sum(1 for i in ids if i.lower() != "mx.a.example")
    assert out.endswith(b"Subject: x\r\n\r\nbody\r\n")
