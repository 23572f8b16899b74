"""looks_protected and strip_our_results: their cheap paths give what the plain scans gave."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser

from hypothesis import example, given, settings
from hypothesis import strategies as st

from crypto.authres import claims_authserv_id
from crypto.mailflow import _PROTECTION_MARKERS, looks_protected, strip_our_results
from mssmail.mime import headers as hdr

FRAGMENTS = [b"application/", b"pkcs7-", b"x-", b"pgp-", b"pgp", b".p7", b"m", b"s", b"-----", b"begin pgp ",
             b"7", b"/", b".", b"-", b"a", b"\r\n", b" ", b"QUJD", b"\xc3\xa9"]


def _old_looks_protected(message: bytes) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _PROTECTION_MARKERS)


@st.composite
def soup(draw, pieces: list[bytes]) -> bytes:
    tokens = draw(st.lists(st.sampled_from(pieces), max_size=30))
    flips = draw(st.lists(st.booleans(), min_size=len(tokens), max_size=len(tokens)))
    return b"".join(t.upper() if flip else t for t, flip in zip(tokens, flips, strict=True))


@settings(max_examples=1000, deadline=None)
@given(soup(FRAGMENTS))
def test_looks_protected_is_the_plain_case_insensitive_search(message: bytes) -> None:
    assert looks_protected(message) == _old_looks_protected(message)


def test_every_marker_in_any_case_is_found() -> None:
    for marker in _PROTECTION_MARKERS:
        for variant in (marker, marker.upper(), marker.title(), marker.swapcase()):
            assert looks_protected(b"Subject: x\r\n\r\nab" + variant + b"cd")


@settings(max_examples=1000, deadline=None)
@given(soup([b"Authentication-Results", b"authentication-results", b":", b" ", b"\t", b"\r\n", b"\n",
             b"mx.b.example", b"other.example", b";", b" spf=pass", b"Subject: x", b"\r\n\r\n", b"\xff"]))
@example(b"Authentication-Results:\r\nmx.b.example")  # a colon-less line after an empty field
@example(b"\r\nAuthentication-Results:mx.b.example")  # no header block: that line is body
def test_strip_our_results_keeps_no_field_that_claims_our_authserv_id(message: bytes) -> None:
    """No Authentication-Results field left by the strip could be read as ours (RFC 8601
    reading of crypto/authres.py: comments, a trailing dot, odd line ends)."""
    stripped = strip_our_results(message, "mx.b.example")
    # The fields as the server's one header reader (mssmail.mime.headers) and the email
    # package split them: a line without a colon is not part of the field before it (the
    # email package ends the header block there; mime reports 'line without colon').
    for field in hdr.parse(stripped).fields:
        if field.key == "authentication-results":
            value = stripped[field.start:field.end].partition(b":")[2]
            assert not claims_authserv_id(value, "mx.b.example"), value
    parsed = BytesParser(policy=email.policy.compat32).parsebytes(stripped)
    for value in parsed.get_all("Authentication-Results") or []:
        assert not claims_authserv_id(str(value).encode("utf-8", "surrogateescape"), "mx.b.example"), value


def test_a_field_name_without_colon_is_kept_not_an_error() -> None:
    message = b"Authentication-Results\r\nSubject: x\r\n\r\nbody"
    assert strip_our_results(message, "mx.b.example") == message
