"""Header blocks: splitting, defects (what other readers parse differently), RFC 2047."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.mime import headers as hdr


def test_fields_values_and_offsets() -> None:
    block = b"From: a@b.example\r\nSubject: one\r\n two\r\nX-Empty:\r\n\r\nbody"
    parsed = hdr.parse(block)
    assert [(f.name, f.value) for f in parsed.fields] == [
        (b"From", b"a@b.example"), (b"Subject", b"one\r\n two"), (b"X-Empty", b"")]
    assert parsed.defects == []
    subject = parsed.first("SUBJECT")
    assert subject is not None and block[subject.start:subject.end] == b"Subject: one\r\n two\r\n"
    assert parsed.get("subject") == "one two"  # RFC 5322 2.2.3: only the CRLF goes
    assert parsed.raw("from") == b"a@b.example"
    assert hdr.header_length(block) == len(block) - 4


def test_all_is_in_order_and_case_insensitive() -> None:
    parsed = hdr.parse(b"To: a@x\r\nto: b@x\r\nTO: c@x\r\n\r\n")
    assert parsed.get_all("To") == ["a@x", "b@x", "c@x"]
    assert "to" in parsed and "cc" not in parsed


@pytest.mark.parametrize("block, defect", [
    (b"From: a@x\r\nSubject: a\rb\r\n\r\n", hdr.BARE_CR),
    (b"From: a@x\nSubject: b\n\n", hdr.BARE_LF),
    (b"From: a@x\r\nSubject: b\r\n", hdr.NO_BODY),
    (b"From jean@a.example Mon Nov  2 10:00:00 2026\r\nFrom: a@x\r\n\r\n", hdr.ENVELOPE_LINE),
    (b"junk line\r\nFrom: a@x\r\n\r\n", hdr.NOT_A_FIELD),
    (b" leading\r\nFrom: a@x\r\n\r\n", hdr.LEADING_CONTINUATION),
    (b"From : a@x\r\n\r\n", hdr.SPACE_BEFORE_COLON),
    (b"Fr\0om: a@x\r\n\r\n", hdr.BAD_FIELD_NAME),
    (b"Fr\0om: a@x\r\n\r\n", hdr.NUL),
    (b"Fr om: a@x\r\n\r\n", hdr.BAD_FIELD_NAME),
    (b"Sub\xc3\xa9ject: a\r\n\r\n", hdr.BAD_FIELD_NAME),
    (b": no name\r\n\r\n", hdr.BAD_FIELD_NAME),
    (b"X: " + b"a" * 1000 + b"\r\n\r\n", hdr.LONG_LINE),
])
def test_defects(block: bytes, defect: str) -> None:
    assert defect in hdr.parse(block).defects


def test_the_submission_bypasses_are_read_as_a_reader_would() -> None:
    """Issue 12, hole 4: each trick is either read as From or flagged."""
    late = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 900) for i in range(300)) + b"From: other@x\r\n\r\n"
    assert len(late) > 256 * 1024 and hdr.parse(late).raw("from") == b"other@x"
    spaced = hdr.parse(b"From : other@x\r\n\r\n")
    assert spaced.raw("from") == b"other@x" and hdr.SPACE_BEFORE_COLON in spaced.defects
    assert hdr.NOT_A_FIELD in hdr.parse(b"junk\r\nFrom: other@x\r\n\r\n").defects
    nul = hdr.parse(b"Fr\0om: other@x\r\n\r\n")
    assert nul.first("from") is None and hdr.NUL in nul.defects
    assert hdr.parse(b"Sender: other@x\r\n\r\n").first("from") is None


def test_header_only_entities_and_empty_lines() -> None:
    assert hdr.header_length(b"\r\nbody") == 2
    assert hdr.header_length(b"\nbody") == 1
    assert hdr.header_length(b"A: b\n\r\nbody") == 7  # a LF line, then a CRLF empty line
    assert hdr.header_length(b"A: b\r\n\nbody") == 7
    assert hdr.header_length(b"A: b") == 4
    assert hdr.block_offsets(b"A: b\r\n\r\nbody") == (6, 8)
    assert hdr.block_offsets(b"A: b\r\n") == (6, 6)
    assert hdr.block_offsets(b"\r\nx") == (0, 2)
    assert hdr.parse(b"").fields == []


@pytest.mark.parametrize("raw, text", [
    (b"=?utf-8?q?Fran=C3=A7ois?=", "François"),
    (b"=?utf-8?b?w6k=?= =?utf-8?b?w6k=?=", "éé"),  # RFC 2047 6.2: the space between goes
    (b"=?utf-8?b?w?= x", "=?utf-8?b?w?= x"),  # broken base64 kept
    (b"=?utf-8?b?4oK=?= =?utf-8?b?rA==?=", "€"),  # a character split across two words
    (b"=?x-unknown?q?a?= b", "=?x-unknown?q?a?= b"),
    (b"Re: =?ISO-8859-1?Q?caf=E9?=\r\n =?ISO-8859-1?Q?_cr=E8me?=", "Re: café crème"),
    (b"=?utf-8*fr?q?oui?=", "oui"),  # RFC 2231 5: a language after the charset
    (b"a =?utf-8?q?b?= c", "a b c"),
    (b"caf\xc3\xa9", "café"),  # RFC 6532 UTF-8
])
def test_encoded_words(raw: bytes, text: str) -> None:
    assert hdr.decode_words(raw) == text


# --- headers.parse against the email package, on blocks without defects -------------

NAMES = st.sampled_from([b"From", b"To", b"Subject", b"X-A", b"content-type", b"Received", b"x!#$%&'*+-.^_`|~"])
VALUE_CHARS = st.sampled_from([b"a", b"b", b" ", b"\t", b"<", b">", b"@", b";", b"=", b"\"", b"(", b")", b":",
                               b"=?utf-8?q?a?="])


@st.composite
def clean_blocks(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        value = b"".join(draw(st.lists(VALUE_CHARS, max_size=8)))
        if value.strip() and draw(st.booleans()):
            value = value + b"\r\n " + b"".join(draw(st.lists(VALUE_CHARS, min_size=1, max_size=4))).lstrip() + b"x"
        lines.append(draw(NAMES) + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + value + b"\r\n")
    return b"".join(lines) + b"\r\n"


@settings(max_examples=400, deadline=None)
@given(clean_blocks())
def test_same_fields_as_the_email_package(block: bytes) -> None:
    parsed = hdr.parse(block)
    assert parsed.defects == []
    reference = BytesHeaderParser(policy=compat32).parsebytes(block)
    assert [(f.name.decode(), f.value.decode()) for f in parsed.fields] == [
        (k, str(v)) for k, v in reference.items()]


WORDS = st.sampled_from(["=?utf-8?q?caf=C3=A9?=", "=?utf-8?b?w6k=?=", "=?iso-8859-1?q?=E9t=E9?=", "plain", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=5))
def test_encoded_words_as_the_email_package(words: list[str]) -> None:
    value = " ".join(words)
    assert hdr.decode_words(value.encode()) == str(make_header(decode_header(value)))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400))
def test_never_raises(block: bytes) -> None:
    parsed = hdr.parse(block)
    for f in parsed.fields:
        assert block[f.start:f.end].startswith(f.name)
    hdr.decode_words(block)


@given(st.text())
def test_encoded_words_read_back_whole(text: str) -> None:
    """What `encode_words` writes, `decode_words` reads back character for character,
    spaces at the word cuts included (RFC 2047 6.2 drops white space between words), on
    lines of at most 78 characters with the field name (RFC 5322 2.1.1)."""
    written = hdr.encode_words(text)
    assert hdr.decode_words(written.replace("\r\n", "")) == text
    assert all(len(line) <= 78 - len("Subject: ") for line in written.split("\r\n "))


def test_a_reply_subject_keeps_its_spaces() -> None:
    """The automatic reply quotes the subject it answers; it keeps every space where
    Python's folder dropped a run of them between two encoded words."""
    from email import message_from_bytes, policy

    from mssmail.delivery import automail

    subject = "== =" + "\x80" * 5 + "\u200b" * 4 + "\U00010000" * 2 + " \x80"
    original = hdr.parse(f"Subject: {hdr.encode_words(subject)}\r\n\r\n".encode())
    reply = automail.build_reply("moi@a.example", "", "toi@b.example", original,
                                 {"out_of_office": {"text": "Absent."}})
    read = message_from_bytes(reply, policy=policy.default)
    assert str(read["Subject"]).endswith(subject)
