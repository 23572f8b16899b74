"""The submission From check's reading (issue 12, hole 4): each bypass is a defect."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.mime import authors

OWN = b"From: Dr Jean Martin <jean.martin@a.example>\r\nTo: c@a.example\r\nSubject: x\r\n\r\nbody\r\n"


def test_an_ordinary_message_has_no_defect() -> None:
    found = authors.read(OWN)
    assert found.defects == [] and found.addresses == {"jean.martin@a.example"}


@pytest.mark.parametrize("message", [
    b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 900) for i in range(300)) + OWN,  # From after 256 KB: still read
    b"From: Dr Jean Martin <jean.martin@a.example>\r\nSender: other@b.example\r\n\r\nx",
    b"From: jean.martin@a.example\r\nReply-To: other@b.example\r\n\r\nx",
])
def test_every_author_is_seen(message: bytes) -> None:
    found = authors.read(message)
    assert "jean.martin@a.example" in found.addresses
    if b"other@" in message:
        assert "other@b.example" in found.addresses


@pytest.mark.parametrize("message", [
    b"From : other@b.example\r\n\r\nx",  # space before the colon
    b"junk line\r\nFrom: other@b.example\r\n\r\nx",  # a leading junk line
    b"Fr\0om: other@b.example\r\nFrom: jean.martin@a.example\r\n\r\nx",  # NUL in the name
    b"Sender: other@b.example\r\n\r\nx",  # only a Sender
    b"From: jean.martin@a.example\r\nFrom: other@b.example\r\n\r\nx",  # two From fields
    b"From: jean.martin@a.example, other@b.example\r\n\r\nx",  # two authors, no Sender
    b"From: jean.martin@a.example\rFrom: other@b.example\r\n\r\nx",  # bare CR
    b"From: \"x\" <=?utf-8?q?other?=@b.example>\r\n\r\nx",  # an encoded word in the address
    b"From: jean.martin\r\n\r\nx",  # no domain
    b"From: <jean.martin@a.example\r\n\r\nx",  # unclosed angle
])
def test_what_a_reader_could_see_otherwise_is_a_defect(message: bytes) -> None:
    assert authors.read(message).defects


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises(message: bytes) -> None:
    authors.read(message)
