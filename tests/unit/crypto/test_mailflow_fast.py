"""looks_protected and strip_our_results: their cheap paths give what the plain scans gave."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.mailflow import _PROTECTION_MARKERS, looks_protected, strip_our_results
from mssmail import mime

FRAGMENTS = [b"application/", b"pkcs7-", b"x-", b"pgp-", b"pgp", b".p7", b"m", b"s", b"-----", b"begin pgp ",
             b"7", b"/", b".", b"-", b"a", b"\r\n", b" ", b"QUJD", b"\xc3\xa9"]


def _old_looks_protected(message: bytes) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _PROTECTION_MARKERS)


def _old_strip(message: bytes, authserv_id: str) -> bytes:
    end = message.find(b"\r\n\r\n")
    head, rest = (message, b"") if end < 0 else (message[: end + 2], message[end + 2:])
    kept, dropped = [], False
    for field in mime.header_fields(head):
        if mime.field_name(field) == "authentication-results":
            value = field.partition(b":")[2].decode("ascii", "replace")  # split()[1] raised
            words = value.split(";", 1)[0].split()
            if (words[0].lower() if words else "") == authserv_id.lower():
                dropped = True
                continue
        kept.append(field)
    return b"".join(kept) + rest if dropped else message


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
def test_strip_our_results_drops_at_least_what_the_plain_scan_dropped(message: bytes) -> None:
    """The RFC 8601 reading (crypto/authres.py) strips every field the first-word scan
    stripped, and more (comments, a trailing dot, odd line ends): nothing that the old
    rule called ours survives it."""
    stripped = strip_our_results(message, "mx.b.example")
    assert _old_strip(stripped, "mx.b.example") == stripped


def test_a_field_name_without_colon_is_kept_not_an_error() -> None:
    message = b"Authentication-Results\r\nSubject: x\r\n\r\nbody"
    assert strip_our_results(message, "mx.b.example") == message
