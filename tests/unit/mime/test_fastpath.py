"""The regex fast path reads exactly what headers.parse reads wherever it answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.mime import fastpath
from mssmail.mime import headers as hdr

WANTED = frozenset({b"from", b"to", b"subject", b"content-type", b"content-disposition"})
LINES = [b"From: a@b.example", b"from:x", b"TO: c@d", b"Subject:", b"Subject: \t", b"Subject: a\tb", b" folded",
         b"\tfolded tab", b"Content-Type: multipart/mixed;", b"  boundary=b", b"X-Other: y", b"junk",
         b"From : spaced", b":", b"Fr\0om: nul", b"From x@y Mon 10:00", b"Subject: bare\rcr", b"To-Do: no",
         b"content-disposition: attachment; filename=a", b"Subject: caf\xc3\xa9", b""]


@st.composite
def blocks(draw) -> bytes:
    lines = draw(st.lists(st.sampled_from(LINES), max_size=10))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    block = eol.join(lines)
    return block + (eol if lines and draw(st.booleans()) else b"")


def _reference(block: bytes) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for f in hdr.parse(block + b"\r\n").fields:
        if f.name.lower() in WANTED:
            out.setdefault(f.name.lower(), []).append(f.value)
    return out


def _agrees(block: bytes) -> None:
    fields_end, _ = hdr.block_offsets(block)
    block = block[:fields_end]
    try:
        fast = fastpath.scan_fields(block, WANTED)
    except fastpath.Unsure:
        return
    assert fast == _reference(block)


@settings(max_examples=2000, deadline=None)
@given(blocks())
def test_fast_path_equals_the_parser(block: bytes) -> None:
    _agrees(block)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_fast_path_equals_the_parser_on_any_bytes(block: bytes) -> None:
    _agrees(block)


def test_plain_mail_takes_the_fast_path() -> None:
    block = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: one\r\n two\r\n"
    assert fastpath.scan_fields(block, WANTED) == {b"from": [b"a@b.example"], b"to": [b"c@d.example"],
                                                   b"subject": [b"one\r\n two"]}
