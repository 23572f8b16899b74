"""The streamed transfer decoding (`transfer.iter_decoded`) is the whole-body decoding.

A download sends an attachment piece by piece; these properties say the pieces, joined,
are octet for octet what decoding the whole body gives (the lenient base64 reading of
`_b64_decode_lenient`, `decode_qp` of RFC 2045 6.7, identity), whatever the body and wherever
the pieces are cut, and that no piece is much larger than asked.
"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.mime import transfer

chunk_sizes = st.integers(min_value=1, max_value=300)
# Bodies near what mail carries: base64/QP text with line ends, padding, junk and NULs.
b64ish = st.lists(st.sampled_from([b"QUJD", b"ZA==", b"eg", b"=", b"\r\n", b"\n", b" ", b"\x00", b"!", b"w"]),
                  max_size=120).map(b"".join)
qpish = st.lists(st.sampled_from([b"abc", b"=41", b"=\r\n", b"=\n", b"=", b"=4", b"\r\n", b"\n", b"\r", b" \t", b"= \r\n",
                                  b"=C3=A9", b"\xff"]), max_size=120).map(b"".join)


def joined(body: bytes, encoding: str, chunk: int) -> bytes:
    return b"".join(transfer.iter_decoded(body, encoding, chunk))


@given(st.binary(max_size=2000), chunk_sizes)
def test_base64_pieces_join_to_the_lenient_whole(data: bytes, chunk: int) -> None:
    wrapped = transfer.b64_lines(data)
    assert joined(wrapped, "base64", chunk) == data
    assert joined(wrapped, " Base64 ", chunk) == data  # the field's value as written


@settings(max_examples=300)
@given(st.one_of(b64ish, st.binary(max_size=400)), chunk_sizes)
def test_damaged_base64_reads_as_the_whole_body_does(body: bytes, chunk: int) -> None:
    assert joined(body, "base64", chunk) == transfer._b64_decode_lenient(body)


@settings(max_examples=300)
@given(st.one_of(qpish, st.binary(max_size=400)), chunk_sizes)
def test_quoted_printable_pieces_join_to_the_whole(body: bytes, chunk: int) -> None:
    assert joined(body, "quoted-printable", chunk) == transfer.decode_qp(body)


@given(st.binary(max_size=1000), chunk_sizes, st.sampled_from(["7bit", "8bit", "binary", "", "x-uuencode"]))
def test_other_encodings_are_sent_as_they_are(body: bytes, chunk: int, encoding: str) -> None:
    assert joined(body, encoding, chunk) == body


def test_pieces_stay_near_the_asked_size() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    body = base64.encodebytes(data)
    pieces = list(transfer.iter_decoded(body, "base64", 64 * 1024))
    assert b"".join(pieces) == data
    assert len(pieces) >= 15 and max(len(p) for p in pieces) <= 64 * 1024 + 3
