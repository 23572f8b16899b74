"""The part tree: byte offsets, nesting, broken structure, bounds."""

from __future__ import annotations

from dataclasses import dataclass

from mssmail.mime import tree

FOLDED = (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"foo\r\n bar\"\r\n\r\n"
          b"preamble\r\n--foo bar\r\nContent-Type: text/plain\r\n\r\none\r\n"
          b"--foo bar\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
          b"--in\r\nContent-Type: text/plain\r\n\r\ntwo.one\r\n"
          b"--in\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
          b"--in--\r\n--foo bar--\r\nepilogue\r\n")


@dataclass
class Section:  # what mssmail.imap.grammar.Section gives section_bytes
    part: tuple[int, ...]
    text: str = ""
    fields: tuple[str, ...] = ()


def test_a_folded_boundary_splits_the_parts() -> None:
    top = tree.parse(FOLDED)
    assert top.content_type == "multipart/mixed" and len(top.children) == 2 and not top.defects
    assert tree.section_bytes(top, Section((1,))) == b"one"
    assert tree.section_bytes(top, Section((2, 1))) == b"two.one"
    assert tree.section_bytes(top, Section((2, 2), "MIME")) == b"Content-Type: message/rfc822\r\n\r\n"
    assert tree.section_bytes(top, Section((2, 2), "HEADER")) == b"Subject: inner\r\n\r\n"
    assert tree.section_bytes(top, Section((2, 2), "TEXT")) == b"inner body"
    assert tree.section_bytes(top, Section((2, 2, 1))) == b"inner body"
    assert tree.section_bytes(top, Section((3,))) is None
    assert tree.section_bytes(top, Section((), "HEADER.FIELDS", ("from",))) == b"From: a@b.example\r\n\r\n"


def test_offsets_point_into_the_one_buffer() -> None:
    top = tree.parse(FOLDED)
    for entity in top.walk():
        assert entity.data is top.data
        assert FOLDED[entity.start:entity.end] == entity.raw
        assert entity.raw == entity.header + entity.body


def test_broken_structure_is_read_as_far_as_it_goes() -> None:
    no_boundary = tree.parse(b"Content-Type: multipart/mixed\r\n\r\nbody")
    assert no_boundary.children == [] and tree.NO_BOUNDARY in no_boundary.defects
    no_delimiter = tree.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\nno delimiter here")
    assert no_delimiter.children == [] and tree.NO_DELIMITER in no_delimiter.defects
    unclosed = tree.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo")
    assert [c.body for c in unclosed.children] == [b"one", b"two"]
    assert tree.NO_CLOSE_DELIMITER in unclosed.defects
    digest = tree.parse(b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\ny\r\n--d--")
    assert digest.children[0].content_type == "message/rfc822"  # RFC 2046 5.1.5


def test_depth_bound() -> None:
    raw = b""
    for level in range(60):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
    raw += b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    top = tree.parse(raw)
    depths = [e.depth for e in top.walk()]
    assert max(depths) == tree.MAX_DEPTH
    assert any(tree.TOO_DEEP in e.defects for e in top.walk())


def test_part_count_bound() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
           + b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(3000)) + b"--b--\r\n")
    top = tree.parse(raw)
    assert sum(1 for _ in top.walk()) == tree.MAX_PARTS  # the top and 1,999 parts
    assert tree.TOO_MANY_PARTS in top.defects
    assert top.children[-1].body == b"1998"


def test_message_rfc822_nesting_is_iterative() -> None:
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 5000 + b"Subject: deep\r\n\r\nx"
    top = tree.parse(raw)  # no RecursionError
    assert max(e.depth for e in top.walk()) == tree.MAX_DEPTH
