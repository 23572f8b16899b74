"""The submission's header reader (From:, Date:, Message-ID:): the MIME room's fast
path where it is sure, `headers.parse` otherwise, always the values `headers.parse`
gives (property test); the header completion."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mssmail.delivery.submission import Headers, complete_headers
from mssmail.mime import headers as mime_headers

NAMES = [b"From", b"from", b"FROM", b"Date", b"Message-ID", b"message-id", b"To", b"Subject", b"X-From"]
VALUES = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
LINE = st.one_of(
    st.tuples(st.sampled_from(NAMES), VALUES).map(lambda nv: nv[0] + b": " + nv[1]),
    VALUES.map(lambda v: b" " + v),  # a continuation
    st.sampled_from([b"From a@b Mon Jan 1", b"not a field", b"", b":x", b"From:", b"From:\tx@y"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(LINE, max_size=8), st.sampled_from([b"\r\n", b"\n"]), st.binary(max_size=30))
def test_same_values_as_the_mime_reader(lines: list[bytes], eol: bytes, body: bytes) -> None:
    raw = eol.join(lines) + eol + eol + body
    reference = mime_headers.parse(raw)
    headers = Headers(raw)
    for name in ("From", "Date", "Message-ID"):
        assert headers.values(name) == [mime_headers.text(f.value) for f in reference.all(name)], (raw, name)


def test_missing_date_and_message_id_are_added_once() -> None:
    raw = b"From: a@a.example\r\nSubject: x\r\n\r\nbody\r\n"
    done = complete_headers(raw, "mx.a.example")
    assert done.endswith(raw) and done.count(b"Date: ") == 1 and b"Message-ID: <" in done
    assert done.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].endswith(b"@mx.a.example")
    assert complete_headers(done, "mx.a.example") == done
