"""SEARCH TEXT/BODY: the raw-bytes shortcut (`search._quick_verdict`) never changes an
answer. `Content.contains_text` must equal `Content.contains_text_decoded` (RFC 3501
section 6.4.4: case-insensitive substring of the decoded header and body text) on any
message, in particular when the needle hides behind RFC 2047 words, base64,
quoted-printable, other charsets or characters that casefold to ASCII."""

from __future__ import annotations

import base64
import quopri
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssmail.store import query as search

ALPHABET = "abcdefghijklmnopqrstuvwxyzKLMXYZ0123456789 -_.,:;=?\"'()" + "éàüß" + search.CASEFOLD_TO_ASCII
WORDS = st.text(alphabet=ALPHABET, min_size=0, max_size=25)
CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "UTF-8", "utf8", "windows-1252", "x-unknown"]


def content(raw: bytes) -> search.Content:
    return search.Content("0" * 64, lambda sha: raw)


def test_casefold_to_ascii_is_complete() -> None:
    found = "".join(
        chr(c) for c in range(128, sys.maxunicode + 1)
        if not 0xD800 <= c < 0xE000 and any(ord(x) < 128 for x in chr(c).casefold()))
    assert found == search.CASEFOLD_TO_ASCII


def _encoded_word(text: str, charset: str, kind: str) -> str:
    try:
        data = text.encode(charset)
    except (UnicodeEncodeError, LookupError):
        charset, data = "utf-8", text.encode("utf-8")
    if kind == "b":
        return f"=?{charset}?b?{base64.b64encode(data).decode()}?="
    return f"=?{charset}?q?{quopri.encodestring(data, header=True).decode()}?="


@st.composite
def header_value(draw) -> str:
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        text = draw(WORDS)
        how = draw(st.sampled_from(["raw", "b", "q"]))
        if how == "raw":
            pieces.append(text)
        else:
            pieces.append(_encoded_word(text, draw(st.sampled_from(CHARSETS)), how))
    return draw(st.sampled_from([" ", "\r\n ", "\r\n\t", ""])).join(pieces)


def _body(text: str, charset: str | None, cte: str) -> tuple[str, bytes]:
    """(Content-* header lines, body octets)."""
    try:
        data = text.encode(charset or "utf-8")
    except (UnicodeEncodeError, LookupError):
        data = text.encode("utf-8")
    if cte == "base64":
        data = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        data = quopri.encodestring(data).replace(b"\n", b"\r\n")
    ctype = "Content-Type: text/plain" + (f"; charset={charset}" if charset else "") + "\r\n"
    return ctype + (f"Content-Transfer-Encoding: {cte}\r\n" if cte else ""), data


@st.composite
def message(draw) -> bytes:
    head = f"From: {draw(header_value())} <a@b.example>\r\nSubject: {draw(header_value())}\r\n"
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        charset = draw(st.sampled_from([None, *CHARSETS]))
        cte = draw(st.sampled_from(["", "7bit", "8bit", "base64", "quoted-printable", "BASE64"]))
        text = "\r\n".join(draw(st.lists(WORDS, min_size=1, max_size=4)))
        parts.append(_body(text, charset, cte.lower() if cte != "BASE64" else "base64"))
    if len(parts) == 1 and draw(st.booleans()):
        headers, data = parts[0]
        return (head + headers + "\r\n").encode("utf-8") + data
    boundary = draw(st.sampled_from(["b1", "=_x", "zz"]))
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + h.encode() + b"\r\n" + d + b"\r\n" for h, d in parts)
    kind = draw(st.sampled_from(["mixed", "alternative"]))
    return (head + f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n\r\n').encode() + body + \
        b"--" + boundary.encode() + b"--\r\n"


@st.composite
def needle_for(draw, raw: bytes) -> str:
    """Often a piece of the message's decoded text, so that matches are common."""
    texts = search._texts(content(raw).tree, True)
    joined = "".join(texts)
    if joined and draw(st.booleans()):
        start = draw(st.integers(0, len(joined) - 1))
        piece = joined[start:start + draw(st.integers(1, 12))]
        return draw(st.sampled_from([piece, piece.upper(), piece.casefold(), piece.strip()])) or "x"
    return draw(st.sampled_from(["ss", "st", "fi", "k", "s", "ffi", "zorglub", "a b", "é", "=?", "base64"]))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.data())
def test_shortcut_never_changes_the_answer(data) -> None:
    raw = data.draw(message())
    needle = data.draw(needle_for(raw))
    for body_only in (False, True):
        assert content(raw).contains_text(needle, body_only) == \
            content(raw).contains_text_decoded(needle, body_only), (raw, needle, body_only)


CASES = [
    # (message, needle, expected TEXT answer)
    (b"Subject: =?utf-8?q?Zorg?= =?utf-8?q?lub?=\r\n\r\nbody\r\n", "zorglub", True),
    (b"Subject: =?utf-8?b?" + base64.b64encode("hyperkaliémie".encode()) + b"?=\r\n\r\nx\r\n", "hyperkali", True),
    (b"Subject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nStra\xdfe\r\n", "strasse", True),
    (b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nStra\xc3\x9fe\r\n", "strasse", True),
    (b"Subject: x\r\n\r\n\xef\xac\x81nal\r\n", "final", True),  # U+FB01 LATIN SMALL LIGATURE FI
    (b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"secret word") + b"\r\n",
     "secret", True),
    (b"Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsec=\r\nret\r\n", "secret", True),
    (b"Subject: x\r\nContent-Type: text/plain; charset*=iso-8859-1''x\r\n\r\nplain\r\n", "plain", True),
    (b"Subject: nothing here\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain body\r\n", "zorglub", False),
    (b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nplain\r\n", "zorglub", False),
    (b"Subject: a\r\n bc\r\n\r\nx\r\n", "a bc", True),  # a needle across a fold
    # The encoded text of a base64 body is not read (query.without_base64), its decoded
    # text is when it is a text part: "c2VjcmV0" is "secret" in base64.
    (b"Subject: x\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
     + base64.b64encode(b"secret") + b"\r\n", "c2vjcmv0", False),
    (b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"secret") + b"\r\n",
     "c2VjcmV0", False),
    (b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"secret") + b"\r\n",
     "base64", True),  # the header is still read raw
]


@pytest.mark.parametrize("raw,needle,expected", CASES)
def test_known_cases(raw: bytes, needle: str, expected: bool) -> None:
    assert content(raw).contains_text_decoded(needle, False) is expected
    assert content(raw).contains_text(needle, False) is expected
    assert content(raw).contains_text(needle, True) == content(raw).contains_text_decoded(needle, True)
