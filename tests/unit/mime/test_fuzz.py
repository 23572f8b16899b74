"""Fuzz: random bytes and mutated real messages through every reader of mssmail.mime.

The one exception any of them may raise is `fastpath.Unsure`, and only from the fast
path itself (`summarize_fast`); everything else reads what it can and reports defects.
"""

from __future__ import annotations

import base64
import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssmail.imap import structure
from mssmail.mime import addresses, fastpath, params, transfer, tree
from mssmail.mime import headers as hdr
from mssmail.store.summary import summarize, summarize_fast, summarize_reference

PDF = base64.encodebytes(b"%PDF-1.4 compte rendu" * 20).replace(b"\n", b"\r\n")
MESSAGES = [
    # A report with an attachment, RFC 2231 file name, encoded words, a group.
    b"Return-Path: <jean.martin@a.example>\r\nFrom: =?utf-8?q?Dr_Jean_Fran=C3=A7ois?= <jean.martin@a.example>\r\n"
    b"To: Cardiologie: claire.durand@b.example, \"Zoe, Dr\" <zoe@b.example>;\r\n"
    b"Cc: <@relay.example:paul@c.example> (Paul)\r\nSubject: =?utf-8?b?UsOpc3VsdGF0cw==?=\r\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <1@a.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed;\r\n boundary=\"=_outer\r\n part\"\r\n\r\nThis is MIME.\r\n"
    b"--=_outer part\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
    b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Compte rendu ci-joint, cordialement.=\r\n\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>Compte rendu</p>\r\n--alt--\r\n--=_outer part\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment;\r\n filename*0*=utf-8''compte%20rendu%20;\r\n filename*1=\"cardio.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + PDF + b"--=_outer part\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: x@y.example\r\nSubject: forwarded\r\nContent-Type: text/plain\r\n\r\ninner\r\n--=_outer part--\r\n",
    # An S/MIME-signed shape.
    b"From: a@b.example\r\nTo: c@d.example\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;"
    b" boundary=\"----sig\"\r\n\r\n------sig\r\nContent-Type: text/plain\r\n\r\nhello\r\n------sig\r\n"
    b"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\nMIIBAAA=\r\n------sig--\r\n",
    # Bare LF, an mbox line, obsolete syntax.
    b"From jean@a.example Mon Nov  2 10:00:00 2026\nFrom : jean@a.example\nSubject: lf\n"
    b"Content-Type: text/plain (comment); charset = \"iso-8859-1\"\n\nbody caf\xe9\n",
]


def _read_everything(raw: bytes) -> None:
    parsed = hdr.parse(raw)
    for f in parsed.fields:
        hdr.decode_words(f.value)
        params.parse_structured(f.value).get("boundary")
        addresses.parse(f.value)
    top = tree.parse(raw)
    for entity in top.walk():
        entity.headers.content_type()
        entity.headers.filename()
        transfer.decode_body(entity.header, entity.body)
    structure.encode_structure(top, True)
    structure.encode_structure(top, False)
    structure.encode_envelope(top)
    assert summarize(raw) == summarize_reference(raw)
    with contextlib.suppress(fastpath.Unsure):
        assert summarize_fast(raw) == summarize_reference(raw)
    transfer.split_content_headers(transfer.split_entity(transfer.canonical(raw))[0])


def test_the_real_messages_read() -> None:
    top = tree.parse(MESSAGES[0])
    assert [c.content_type for c in top.children] == ["multipart/alternative", "application/pdf", "message/rfc822"]
    assert top.children[1].headers.filename() == "compte rendu cardio.pdf"
    assert summarize(MESSAGES[0]).has_attachments
    for raw in MESSAGES:
        _read_everything(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MESSAGES), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 12),
                                                     st.binary(max_size=6)), max_size=8))
def test_mutated_messages(raw: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(raw)
    for at, cut, insert in edits:
        at %= len(data) + 1
        data[at:at + cut] = insert
    _read_everything(bytes(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MESSAGES), st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"\r\n ", b"\0", b"--", b"--=_outer part", b"--alt--", b";", b"\"", b"(", b":",
     b"=?utf-8?b?", b"*0*=", b"'", b"%", b"<", b">", b"@", b","])), max_size=10))
def test_structural_mutations(raw: bytes, inserts: list[tuple[int, bytes]]) -> None:
    data = bytearray(raw)
    for at, piece in inserts:
        at %= len(data) + 1
        data[at:at] = piece
    _read_everything(bytes(data))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(raw: bytes) -> None:
    _read_everything(raw)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"Content-Type: application/pkcs7-mime", b"Content-Type: text/plain",
                                 b"X: y", b"\r", b"\n", b"\r\n", b" ", b"pkcs7-mime", b"smime-type=enveloped-data",
                                 b";", b"application/x-pkcs7-mime"]), max_size=12))
def test_the_enveloped_precheck_never_misses(pieces: list[bytes]) -> None:
    """crypto's view filter skips is_smime when _may_be_enveloped says no: it must never
    say no to a message is_smime calls enveloped, bare CRs and LFs included."""
    from crypto import mailflow, smime

    raw = b"".join(pieces)
    if smime.is_smime(raw) == "enveloped":
        assert mailflow._may_be_enveloped(raw)
