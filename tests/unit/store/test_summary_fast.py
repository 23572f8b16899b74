"""The fast summary (mime.fastpath) must agree with the reference (mime.headers) on any input."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssmail.mime import fastpath
from mssmail.store.summary import summarize, summarize_fast, summarize_reference

NAMES = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "Content-Type", "Content-Disposition",
         "MIME-Version", "X-Mailer", "Received", "Content-Transfer-Encoding", "To-Do", "Fromage"]
ODD_LINES = [b"From jean@a.example Mon Nov  2 10:00:00 2026", b"no colon here", b":no name",
             b"Subject : spaced name", b"Sub\xc3\xa9ject: non-ASCII name", b"", b" leading continuation",
             b"From : x", b"X-Bare-CR: a\rb"]
VALUE_PIECES = [b"jean@a.example", b"Jean Martin <jean@a.example>", b"=?utf-8?q?Fran=C3=A7ois?=",
                b"=?utf-8?b?UsOpc3VsdGF0cw==?=", b"=?broken?x?", b"=?", b"caf\xc3\xa9", b"\xff\xfe",
                b"Mon, 2 Nov 2026 10:00:00 +0100", b"2 Nov 2026", b"<1@a.example>", b"\t", b"  ",
                b"attachment", b"inline", b"; filename=a.pdf", b'; filename="a b.pdf"', b"; name=x.p7m",
                b"; filename*=utf-8''caf%C3%A9.pdf", b"; name*0=a; name*1=b", b'; boundary="b"',
                b"; boundary=b", b'; boundary="b\\"c"', b';x="a;b"', b"=", b";", b'"', b"\\",
                b"multipart/mixed", b"text/plain", b"application/pdf", b"MULTIPART/Alternative", b"a/b/c"]
CONTENT_TYPES = [b"multipart/mixed; boundary=b", b'multipart/mixed; boundary="b"', b"Multipart/Mixed;boundary=b",
                 b'multipart/alternative; boundary="b"; charset=x', b"multipart/mixed", b"multipart/mixed; boundary=",
                 b"multipart/mixed; boundary*=b", b"text/plain", b"text/plain; name=cr.pdf",
                 b'application/pdf; name="cr.pdf"', b"application/pdf; name*=utf-8''cr.pdf", b"image/png; name=\"\"",
                 b"multipart/mixed;\r\n boundary=b", b"multipart/mixed; boundary=\xc3\xa9", b"text"]
DATES = [b"Mon, 2 Nov 2026 10:00:00 +0100", b"2 Nov 2026 10:00 -0000", b"Mon, 2 Nov 2026 10:00:00 GMT",
         b"Mon,\r\n 2 Nov 2026 10:00:00 +0100", b"Tue, 31 Feb 2026 25:00:00 +9999", b"yesterday"]
DISPOSITIONS = [b"attachment", b"ATTACHMENT; filename=a.pdf", b"inline", b'inline; filename="a.pdf"',
                b"inline; filename=\"\"", b"inline; filename*=utf-8''a.pdf", b"attachment\xc3\xa9", b"form-data"]


def _case(draw, name: str) -> bytes:
    choice = draw(st.integers(0, 2))
    return (name.lower() if choice == 0 else name.upper() if choice == 1 else name).encode()


@st.composite
def values(draw) -> bytes:
    pieces = draw(st.lists(st.sampled_from(VALUE_PIECES), max_size=4))
    value = b" ".join(pieces)
    if value and draw(st.booleans()):
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from([b"\r\n ", b"\n\t", b"\r\n\t ", b"\r\n"])) + value[at:]
    return value


@st.composite
def header_block(draw, structural: list[bytes]) -> bytes:
    """Header lines (any order, case, folding) ending in a blank line, or not."""
    lines = [_case(draw, "Content-Type") + b": " + s if i == 0 else _case(draw, "Content-Disposition") + b": " + s
             for i, s in enumerate(structural)]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(ODD_LINES)))
        else:
            separator = draw(st.sampled_from([b": ", b":", b":\t", b":  "]))
            name = draw(st.sampled_from(NAMES))
            value = draw(st.sampled_from(DATES)) if name == "Date" and draw(st.booleans()) else draw(values())
            lines.append(_case(draw, name) + separator + value)
    order = draw(st.permutations(range(len(lines))))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    return b"".join(lines[i] + eol for i in order) + (eol if draw(st.integers(0, 5)) else b"")


@st.composite
def entity(draw, depth: int = 0) -> bytes:
    if depth < 3 and draw(st.integers(0, 2)) == 0:
        boundary = draw(st.sampled_from([b"b", b"outer", b'b"c', b"=_x"]))
        quoted = boundary.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        ctype = draw(st.sampled_from([b"multipart/mixed; boundary=\"" + quoted + b"\"",
                                      b"multipart/mixed; boundary=" + boundary,
                                      b"Multipart/Related;\r\n\tboundary=\"" + quoted + b"\""]))
        head = draw(header_block([ctype]))
        parts = draw(st.lists(entity(depth + 1), max_size=3))
        body = b"preamble --" + boundary + b" not a delimiter\r\n"
        for part in parts:
            body += b"--" + boundary + b"\r\n" + part + b"\r\n"
        body += b"--" + boundary + b"--\r\n" if draw(st.booleans()) else b""
        return head + body
    structural = [draw(st.sampled_from(CONTENT_TYPES))]
    if draw(st.booleans()):
        structural.append(draw(st.sampled_from(DISPOSITIONS)))
    return draw(header_block(structural)) + b"body text\r\n" + base64.encodebytes(b"x" * 60)


def _agrees(raw: bytes) -> None:
    expected = summarize_reference(raw)
    assert summarize(raw) == expected
    try:
        fast = summarize_fast(raw)
    except fastpath.Unsure:
        return
    assert fast == expected


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entity(), st.data())
def test_fast_summary_agrees_with_the_reference(raw: bytes, data: st.DataObject) -> None:
    _agrees(raw)
    _agrees(raw[: data.draw(st.integers(0, len(raw)))])  # truncated input


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_agree(raw: bytes) -> None:
    _agrees(raw)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"From", b"to", b"Subject", b":", b" ", b"\t", b"\r\n", b"\n", b"\r", b"a",
                                 b"=?utf-8?q?a?=", b"\xc3", b"--b", b"Content-Type", b"multipart/mixed",
                                 b"boundary=b", b";", b"attachment", b"Content-Disposition", b"From "]),
                max_size=40))
def test_token_soup_agrees(tokens: list[bytes]) -> None:
    _agrees(b"".join(tokens))


@pytest.mark.parametrize("raw", [
    b"From: a@b.example\r\nTo: c@d.example\r\nSubject: plain\r\nContent-Type: text/plain\r\n\r\nbody\r\n",
    b"From: a@b.example\nSubject: =?utf-8?q?R=C3=A9sultats?=\n\nbody\n",
    b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: application/pdf; name=\"cr.pdf\"\r\nContent-Disposition: attachment; "
    b"filename=\"cr.pdf\"\r\n\r\nAAAA\r\n--b--\r\n",
])
def test_ordinary_mail_takes_the_fast_path(raw: bytes) -> None:
    assert summarize_fast(raw) == summarize_reference(raw)
