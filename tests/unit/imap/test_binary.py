"""BINARY (RFC 3516): quoted-printable decoding (RFC 2045 6.7), the decoded part, the
FETCH grammar and rendering (literal8 for NULs), and APPEND's binary-to-base64; with
properties over random payloads and the grammar fuzzed."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import fetch, grammar
from mssmail.imap.tokens import ParseError
from mssmail.mime import transfer, tree
from mssmail.store.messages import MessageMeta


@given(st.binary(max_size=400))
def test_qp_decodes_what_an_encoder_wrote(data):
    encoded = binascii.b2a_qp(data, quotetabs=True, istext=False)
    assert transfer.decode_qp(encoded) == data
    assert transfer.decode_qp(encoded.replace(b"\n", b"\r\n")) == data  # soft breaks in CRLF


@given(st.binary(max_size=400))
def test_qp_never_raises_nor_grows(data):
    assert len(transfer.decode_qp(data)) <= len(data)


def test_qp_rules_of_rfc_2045():
    assert transfer.decode_qp(b"hello  \r\nbar") == b"hello\r\nbar"  # rule 3: padding goes
    assert transfer.decode_qp(b"foo = \t\r\nbar") == b"foo bar"  # soft break after padding
    assert transfer.decode_qp(b"=41=4a=4A") == b"AJJ"  # lower-case hex accepted
    assert transfer.decode_qp(b"a=ZZ=4=\r\n1") == b"a=ZZ=41"  # a bad `=` stays, no rescan


def multipart(*parts: tuple[str, bytes]) -> bytes:
    out = [b"From: a@b\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"]
    for cte, body in parts:
        out.append(b"--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: "
                   + cte.encode() + b"\r\n\r\n" + body + b"\r\n")
    out.append(b"--zz--\r\n")
    return b"".join(out)


payload = st.binary(max_size=200).filter(lambda b: b"--zz" not in b and not b.endswith(b"\r"))


@given(st.lists(payload, min_size=1, max_size=4))
def test_binary_append_keeps_every_octet(bodies):
    raw = multipart(*[("binary", b) for b in bodies])
    stored = transfer.encode_binary_parts(raw)
    assert b"\0" not in stored
    top = tree.parse(stored)
    for number, body in enumerate(bodies, 1):
        assert transfer.binary_payload(top, (number,)) == body
    assert transfer.encode_binary_parts(stored) == stored  # nothing left to encode


def test_binary_payload_of_each_kind_of_part():
    raw = multipart(("base64", b"aGVsbG8="), ("quoted-printable", b"a=3Db"), ("7bit", b"plain"))
    top = tree.parse(raw)
    assert [transfer.binary_payload(top, (n,)) for n in (1, 2, 3)] == [b"hello", b"a=b", b"plain"]
    assert transfer.binary_payload(top, ()) == raw
    assert transfer.binary_payload(top, (9,)) is None
    with pytest.raises(transfer.UnknownEncoding):
        transfer.binary_payload(tree.parse(multipart(("x-uuencode", b"begin"))), (1,))


def test_fetch_grammar_for_binary():
    items = grammar.parse(b"a FETCH 1 (BINARY.PEEK[1.2]<5.10> BINARY.SIZE[] BINARY[3])").args[0].items
    assert [i.label() for i in items] == ["BINARY[1.2]<5>", "BINARY.SIZE[]", "BINARY[3]"]
    assert [i.marks_seen for i in items] == [False, False, True]
    for bad in (b"a FETCH 1 BINARY[1.MIME]", b"a FETCH 1 BINARY[HEADER]", b"a FETCH 1 BINARY.SIZE[1]<0.5>",
                b"a FETCH 1 BINARY[0]"):
        with pytest.raises(ParseError):
            grammar.parse(bad)


@given(st.lists(st.integers(1, 40), max_size=5), st.one_of(st.none(), st.tuples(st.integers(0, 99),
                                                                                 st.integers(1, 99))))
def test_binary_item_labels_round_trip(part, partial):
    spec = ".".join(map(str, part))
    text = f"BINARY.PEEK[{spec}]" + (f"<{partial[0]}.{partial[1]}>" if partial else "")
    (item,) = grammar.parse(f"a FETCH 1 ({text})".encode()).args[0].items
    assert item.section is not None and item.section.part == tuple(part) and item.partial == partial
    assert item.label() == f"BINARY[{spec}]" + (f"<{partial[0]}>" if partial else "")


def meta(raw: bytes) -> MessageMeta:
    return MessageMeta(id=1, uid=7, flags="", size=len(raw), internal_date=datetime(2026, 1, 1, tzinfo=UTC),
                       modseq=1, sha256="", extra={})


def test_render_uses_literal8_only_for_nuls():
    raw = transfer.encode_binary_parts(multipart(("binary", b"a\0b"), ("7bit", b"text")))
    items = grammar.parse(b"a FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.SIZE[1])").args[0].items
    line = fetch.render_fetch(1, meta(raw), items, raw, uid_command=False).line
    assert b"BINARY[1] ~{3}\r\na\0b BINARY[2] {4}\r\ntext BINARY.SIZE[1] 3)" in line
    unknown = multipart(("x-weird", b"zz"))
    with pytest.raises(ParseError) as caught:
        fetch.render_fetch(1, meta(unknown), items[:1], unknown, uid_command=False)
    assert caught.value.code == "UNKNOWN-CTE" and caught.value.status == "NO"


def test_append_grammar_marks_literal8():
    request = grammar.parse(b"a APPEND INBOX ~{3}\r\na\0b {2}\r\nok")
    assert [(m.data, m.binary) for m in request.args[1]] == [(b"a\0b", True), (b"ok", False)]
