"""SORT (RFC 5256) and SORT=DISPLAY (RFC 5957) keys and order, sans-IO
(mssmail/imap/sort.py); the imaptest sort-* groups check the same against a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import grammar
from mssmail.imap.sort import SortError, SortInput, base_subject, parse_program, sort_uids
from mssmail.imap.tokens import ParseError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("subject", "base"), [
    ("Re: hello", "hello"),
    ("RE: Fwd: [list] Re: hello (fwd)", "hello"),
    ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b"),
    ("Re: [FWD: c]", "c"),
    ("[xyz]", "[xyz]"),  # a blob alone is the subject (RFC 5256 2.1 step 4)
    ("re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon"),
    ("=?us-ascii?b?UmU6IGM=?=", "c"),  # encoded words are decoded first
    ("  spaced   out  ", "spaced out"),
    ("", ""),
])
def test_base_subject(subject, base):
    assert base_subject(subject) == base


def item(uid: int, **headers: str) -> SortInput:
    size = int(headers.pop("size", "100"))
    return SortInput(uid, size, T0 + timedelta(minutes=uid), headers)


def test_keys_reverse_and_ties_in_mailbox_order():
    items = [item(1, subject="Re: b", **{"from": "Zoé <z@x>"}, size="30"),
             item(2, subject="a", **{"from": "y@x"}, size="10"),
             item(3, subject="B", **{"from": "\"Anne\" <a@x>"}, size="30")]
    assert sort_uids(parse_program(["SUBJECT"]), items) == [2, 1, 3]
    assert sort_uids(parse_program(["REVERSE", "SUBJECT"]), items) == [1, 3, 2]
    assert sort_uids(parse_program(["SIZE", "REVERSE", "ARRIVAL"]), items) == [2, 3, 1]
    assert sort_uids(parse_program(["FROM"]), items) == [3, 2, 1]  # a, y, z: the mailbox
    assert sort_uids(parse_program(["DISPLAYFROM"]), items) == [3, 2, 1]  # Anne, y@x, Zoé


def test_groups_sort_by_their_name_and_dates_by_utc():
    items = [item(1, to="user2@domain2.org", date="Mon, 1 Jan 2026 10:00:00 +0200"),
             item(2, to="user2: blah@domain1.org;", date="Mon, 1 Jan 2026 09:30:00 +0000"),
             item(3, to="user1@domain1.org", date="garbage")]  # falls back to arrival
    assert sort_uids(parse_program(["TO"]), items) == [3, 1, 2]
    assert sort_uids(parse_program(["DATE"]), items) == [3, 1, 2]  # 08:00, 09:30 UTC; 3: T0+3min


@pytest.mark.parametrize("words", [[], ["REVERSE"], ["REVERSE", "REVERSE", "DATE"], ["COLOUR"]])
def test_bad_programs(words):
    with pytest.raises(SortError):
        parse_program(words)


def test_sort_command_grammar():
    request = grammar.parse(b"a UID SORT RETURN (MIN COUNT) (REVERSE DATE) UTF-8 ALL")
    assert request.uid and request.name == "SORT"
    args = request.args[0]
    assert args.program == [("DATE", True)] and args.search.returns == ("MIN", "COUNT")
    with pytest.raises(ParseError):
        grammar.parse(b"a SORT (DATE) ALL")  # the charset is not optional
    with pytest.raises(ParseError):
        grammar.parse(b"a SORT (NOPE) UTF-8 ALL")


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "B", "re: a", "c"])), max_size=20))
def test_sort_is_a_stable_permutation(specs):
    items = [item(uid, subject=subject, size=str(size)) for uid, (size, subject) in enumerate(specs, 1)]
    for program in (["SIZE"], ["SUBJECT", "REVERSE", "SIZE"], ["REVERSE", "ARRIVAL"]):
        order = sort_uids(parse_program(program), items)
        assert sorted(order) == [i.uid for i in items]
    by_size = sort_uids(parse_program(["SIZE"]), items)
    sizes = {i.uid: i.size for i in items}
    assert all(sizes[a] < sizes[b] or (sizes[a] == sizes[b] and a < b) for a, b in pairwise(by_size))
    assert sort_uids(parse_program(["REVERSE", "ARRIVAL"]), items) == sorted(sizes, reverse=True)


def test_list_extended_refuses_unknown_return_options():
    """RFC 5258 section 3: an unknown RETURN option is BAD (imaptest's listext)."""
    args = grammar.parse(b'a LIST "" "" RETURN (CHILDREN SUBSCRIBED)').args[0]
    assert args.returns == ("CHILDREN", "SUBSCRIBED")
    with pytest.raises(ParseError):
        grammar.parse(b'a LIST "" "" RETURN (IMAPTEST)')


def test_within_younger_older_are_instants():
    """WITHIN (RFC 5032): YOUNGER n is the last n seconds, OLDER n before that."""
    from mssmail.imap import search
    from mssmail.imap.searchkeys import Key
    from mssmail.store import query as q

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    view = search.View([1], now)
    assert search.compile_criteria(Key("age", 60, op="<="), view) == q.Arrived(
        at_or_after=now - timedelta(seconds=60))
    assert search.compile_criteria(Key("age", 60, op=">"), view) == q.Arrived(
        before=now - timedelta(seconds=60))
    request = grammar.parse(b"a SEARCH YOUNGER 3600 OLDER 60")
    assert request.name == "SEARCH"
