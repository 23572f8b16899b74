"""SEARCH FROM/TO/CC/BCC match an address as ENVELOPE reads it (imaptest's
search-addresses): comments, quoted local parts, source routes and blanks do not hide it."""

from __future__ import annotations

import pytest

from mssmail.store import query as q
from mssmail.store.summary import summarize

MESSAGES = {
    1: b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\nBcc: user-bcc@domain.org\r\n\r\nbody\r\n",
    2: b"From: <user-from (comment)@ (comment) domain.org>\r\nCc: <user-cc @ domain.org>\r\n\r\nbody\r\n",
    3: b"From: user-from@domain.org (RealFrom)\r\nTo: groupname: groupuser1@domain.org;\r\n\r\nbody\r\n",
    4: b"From: \"jean martin\"@a.example\r\nTo: <@relay.example:zoe@b.example>\r\n\r\nbody\r\n",
    5: b"From: other@domain.org\r\nTo: someone@else.example\r\n\r\nbody\r\n",
}


def _search(node: q.Query) -> list[int]:
    test = q.compile_query(node)
    hits = []
    for uid, raw in MESSAGES.items():
        summary = summarize(raw)
        row: list[object] = [None] * (len(q.COLUMNS) + 1)
        row[q.UID], row[q.FROM], row[q.TO] = uid, summary.from_addr, summary.to_addrs
        if test(tuple(row), q.Content(str(uid), lambda sha: MESSAGES[int(sha)])):
            hits.append(uid)
    return hits


@pytest.mark.parametrize("field, needle, expected", [
    ("from", "user-from@domain.org", [1, 2, 3]),
    ("from", "realfrom", [3]),
    ("from", "jean martin@a.example", [4]),
    ("from", "", [1, 2, 3, 4, 5]),
    ("to", "groupname", [3]),
    ("to", "zoe@b.example", [4]),
    ("cc", "user-cc@domain.org", [2]),
    ("bcc", "user-bcc@domain.org", [1]),
    ("to", "nobody", []),
])
def test_address_searches(field: str, needle: str, expected: list[int]) -> None:
    assert _search(q.Header(field, needle)) == expected
