"""`tree.split_multipart` (bytes.find) gives exactly the parts of the former regex
implementation, kept as `split_multipart_regex`, on tricky delimiters and on any data."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssmail.mime import tree as mimetree
from mssmail.mime.tree import split_multipart, split_multipart_regex

CASES = [
    (b"", b"b"),
    (b"--b\r\nA\r\n--b--\r\n", b"b"),
    (b"--b\nA\n--b--\n", b"b"),  # bare LF
    (b"preamble\r\n--b\r\none\r\n--b\r\ntwo\r\n--b--\r\nepilogue", b"b"),
    (b"--b\r\n--b\r\n--b--", b"b"),  # the line end after a delimiter is not the next one's
    (b"--b\r\n\r\n--b\r\n\r\n--b--", b"b"),  # empty parts
    (b"--b  \t\r\nA\r\n--b-- \r\n", b"b"),  # trailing white space
    (b"--b\rA\r\n--b--", b"b"),  # lone CR after a delimiter: not a delimiter line
    (b"--bx\r\nA\r\n--b\r\nB", b"b"),  # longer boundary is not ours; unterminated
    (b"--b--x\r\n--b\r\nA\r\n--b--", b"b"),  # close delimiter must end its line
    (b"x--b\r\nA\r\n--b--", b"b"),  # not at a line start
    (b"\r\n--b\r\nA\r\n--b--", b"b"),  # CRLF at the very start
    (b"--b\r\nA\r\r\n--b--", b"b"),
    (b"--b\r\nA\n\r\n--b--", b"b"),
    (b"--b", b"b"),
    (b"--b--", b"b"),
    (b"-----\r\n---\r\n-----", b"-"),  # boundary made of dashes
    (b"----\n----\n------\n", b"--"),
    (b"--=_a\r\n--=_a--\r\n", b"=_a"),
    (b"--a.b\r\nx\r\n--a-b\r\n--a.b--", b"a.b"),  # regex metacharacters are literal
    (b"--b\r\nx\r\n--b\r\n", b"b"),  # ends right after a delimiter
    (b"--b\n\n--b\n", b"b"),
    (b"--b\r\nA\r\n--b\r\nB\r\n--b--\r\n--b\r\nC", b"b"),  # nothing after the close
]


@pytest.mark.parametrize("body,boundary", CASES)
def test_same_parts_as_the_regex(body: bytes, boundary: bytes) -> None:
    assert split_multipart(body, boundary) == split_multipart_regex(body, boundary)


def test_part_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mimetree, "MAX_PARTS", 3)
    body = b"".join(b"--b\r\npart %d\r\n" % i for i in range(10)) + b"--b--"
    assert split_multipart(body, b"b") == split_multipart_regex(body, b"b")
    assert len(split_multipart(body, b"b")) == 3


# Bodies made of the pieces that matter around delimiters.
PIECES = [b"--", b"-", b"b", b"bb", b"\r\n", b"\n", b"\r", b" ", b"\t", b"x", b"--b", b"--b--", b"\r\n--b",
          b"\n--b--", b"a"]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.sampled_from([b"b", b"bb", b"-", b"b-", b"-b", b"x b"]))
def test_same_parts_on_delimiter_soup(pieces: list[bytes], boundary: bytes) -> None:
    body = b"".join(pieces)
    assert split_multipart(body, boundary) == split_multipart_regex(body, boundary)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.binary(min_size=1, max_size=6))
def test_same_parts_on_any_bytes(body: bytes, boundary: bytes) -> None:
    assert split_multipart(body, boundary) == split_multipart_regex(body, boundary)
    with_delimiters = body.replace(b"Z", b"\r\n--" + boundary)
    assert split_multipart(with_delimiters, boundary) == split_multipart_regex(with_delimiters, boundary)
