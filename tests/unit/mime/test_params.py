"""Content-Type/Disposition parameters: quoting, comments, folding, RFC 2231."""

from __future__ import annotations

from email.message import Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.mime import params


@pytest.mark.parametrize("value, name, expected", [
    (b'multipart/mixed; boundary="foo\r\n bar"', "boundary", "foo bar"),  # folded: unfolded (RFC 5322 2.2.3)
    (b"multipart/mixed;\r\n\tboundary=simple", "boundary", "simple"),
    (b'multipart/mixed; boundary="a\\"b"', "boundary", 'a"b'),  # quoted pair
    (b"text/plain; charset=us-ascii (Plain text)", "charset", "us-ascii"),  # RFC 2045 5.1 comment
    (b"text/plain; (c) charset = (c) \"utf-8\" (c)", "charset", "utf-8"),
    (b"application/pdf; name=compte rendu.pdf", "name", "compte rendu.pdf"),  # unquoted with a space
    (b"multipart/mixed; boundary==_x=", "boundary", "=_x="),
    (b"attachment; filename*=utf-8''caf%C3%A9.pdf", "filename", "café.pdf"),  # RFC 2231 4
    (b"attachment; filename*0*=iso-8859-1'fr'caf%E9; filename*1=\" creme.pdf\"", "filename",
     "café creme.pdf"),  # RFC 2231 3-4: a plain section after an extended one
    (b"attachment; filename*1=b.pdf; filename*0=a", "filename", "ab.pdf"),  # sections in number order
    (b'text/plain; name="a;b"; x=1', "name", "a;b"),
    (b'text/plain; name="unterminated', "name", "unterminated"),
    (b"text/plain; name=first; NAME=second", "name", "first"),
])
def test_values(value: bytes, name: str, expected: str) -> None:
    assert params.parse_structured(value).get(name) == expected


def test_rfc2231_keeps_charset_and_language_for_imap() -> None:
    param = params.parse_structured(b"attachment; filename*=iso-8859-1'fr'caf%E9.pdf").find("filename")
    assert param is not None and param.charset == "iso-8859-1" and param.language == "fr"
    assert param.value == "café.pdf" and param.encoded() == "iso-8859-1'fr'caf%E9.pdf"


@pytest.mark.parametrize("value, expected", [
    (None, "text/plain"), (b"text", "text/plain"), (b"a/b/c", "text/plain"), (b"TEXT/HTML", "text/html"),
    (b"multipart/mixed (comment); boundary=x", "multipart/mixed"), (b"(c) image/png", "image/png"),
    (b"text/\xc3\xa9", "text/plain"),
])
def test_media_type(value: bytes | None, expected: str) -> None:
    assert params.media_type(value) == expected


def test_defects_are_reported() -> None:
    assert params.DUPLICATE in params.parse_structured(b"text/plain; a=1; a=2").defects
    assert params.UNTERMINATED_QUOTE in params.parse_structured(b'text/plain; a="x').defects
    assert params.BAD_CONTINUATION in params.parse_structured(b"text/plain; a*0=x; a*2=y").defects


TOKENS = st.text(alphabet="abcXYZ019-_.+", min_size=1, max_size=8)
QUOTED = st.text(alphabet="abc XYZ019-_.+;=,/:", min_size=0, max_size=10)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["charset", "name", "boundary", "x-a", "format"]),
                          st.one_of(TOKENS, QUOTED.map(lambda q: f'"{q}"'))), max_size=4),
       st.sampled_from(["; ", ";", " ;\r\n\t"]))
def test_simple_parameters_as_the_email_package(pairs: list[tuple[str, str]], separator: str) -> None:
    value = "text/plain" + "".join(f"{separator}{k}={v}" for k, v in pairs)
    ours = params.parse_structured(value.encode())
    message = Message()
    message["Content-Type"] = value
    for key in {k for k, _ in pairs}:
        assert ours.get(key) == message.get_param(key), value


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises(value: bytes) -> None:
    structured = params.parse_structured(value)
    for param in structured.params:
        param.encoded()
    params.media_type(value)
