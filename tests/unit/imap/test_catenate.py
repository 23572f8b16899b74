"""CATENATE (RFC 4469): the APPEND grammar and the IMAP URLs (RFC 5092) it reads, with
properties over generated URLs and arbitrary text."""

from __future__ import annotations

import contextlib
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import grammar, imapurl
from mssmail.imap.tokens import ParseError


def test_append_catenate_grammar():
    request = grammar.parse(b'a APPEND Sent (\\Seen) CATENATE (URL "/INBOX/;UID=3/;SECTION=HEADER" '
                            b"TEXT {6}\r\nbody\r\n) CATENATE (TEXT {2}\r\nhi) {3}\r\nraw")
    first, second, third = request.args[1]
    assert first.flags == ("\\Seen",) and first.catenate == (
        ("URL", b"/INBOX/;UID=3/;SECTION=HEADER"), ("TEXT", b"body\r\n"))
    assert second.catenate == (("TEXT", b"hi"),) and third.catenate is None and third.data == b"raw"
    for bad in (b"a APPEND x CATENATE ()", b"a APPEND x CATENATE (FOO {1}\r\nx)", b"a APPEND x CATENATE TEXT",
                b"a APPEND x CATENATE (" + b"TEXT {1}\r\nx " * 101 + b"TEXT {1}\r\nx)"):
        with pytest.raises(ParseError):
            grammar.parse(bad)


mailbox = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)
section = st.sampled_from([None, "HEADER", "TEXT", "1", "1.2", "2.MIME", "1.HEADER.FIELDS (FROM TO)"])


@given(mailbox, st.one_of(st.none(), st.integers(1, 2**32 - 1)), st.integers(1, 2**32 - 1), section,
       st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.one_of(st.none(), st.integers(1, 10**6)))),
       st.booleans())
def test_message_urls_round_trip(name, uidvalidity, uid, spec, partial, absolute):
    url = ("imap://dr.x@mail.example:993" if absolute else "") + "/" + quote(name.encode("utf-8"), safe="")
    if uidvalidity:
        url += f";UIDVALIDITY={uidvalidity}"
    url += f"/;UID={uid}"
    if spec:
        url += "/;SECTION=" + quote(spec, safe=".()")
    if partial:
        url += f"/;PARTIAL={partial[0]}" + (f".{partial[1]}" if partial[1] else "")
    found = imapurl.parse(url)
    assert found.mailbox == name.encode("utf-8") and found.uid == uid and found.uidvalidity == uidvalidity
    assert found.host == ("mail.example" if absolute else "")
    assert (found.section.label() if found.section else None) == spec
    assert found.partial == partial


@given(st.text(max_size=80))
def test_any_text_is_a_url_or_bad_url(text):
    with contextlib.suppress(imapurl.BadURL):  # nothing else may escape
        imapurl.parse(text)


def test_urls_catenate_refuses():
    for bad in ("/INBOX", "/INBOX/;UID=0", "INBOX/;UID=1", "/INBOX/;UID=1/;EXPIRE=2030", "/INBOX?SUBJECT%20x",
                "/INBOX/;UID=1/;SECTION=BOGUS", "/;UID=1", "/INBOX/;UID=1/;UID=2", "/INBOX/;UID=1/;PARTIAL=x"):
        with pytest.raises(imapurl.BadURL):
            imapurl.parse(bad)
    assert imapurl.cut(b"0123456789", (100000, 1)) == b"" and imapurl.cut(b"0123456789", (3, None)) == b"3456789"
