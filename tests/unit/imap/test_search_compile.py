"""IMAP SEARCH keys compile into the store's query tree with IMAP's meaning
(mssmail/imap/search.py): sequence numbers against the session's view, day ranges,
YOUNGER/OLDER as instants, NEW/RECENT/OLD against the session's \\Recent set."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import search
from mssmail.imap.searchkeys import parse_criteria
from mssmail.imap.tokens import Cursor
from mssmail.store import query as q

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def compile_text(text: str, uids: list[int]) -> q.Query:
    return search.compile_criteria(parse_criteria(Cursor(text.encode())), search.View(uids, NOW))


def test_keys_compile_to_the_query_tree():
    uids = [3, 5, 9, 10, 42]
    assert compile_text("2:4", uids) == q.Uids(((5, 5), (9, 10)))
    assert compile_text("*", uids) == q.Uids(((42, 42),))
    assert compile_text("UID 6:*", uids) == q.Uids(((6, 42),))
    assert compile_text("ON 5-Nov-2026", uids) == q.DateRange("internal", date(2026, 11, 5), date(2026, 11, 6))
    assert compile_text("SENTBEFORE 5-Nov-2026", uids) == q.DateRange("sent", before=date(2026, 11, 5))
    assert compile_text("YOUNGER 60", uids) == q.Arrived(at_or_after=NOW - timedelta(seconds=60))
    assert compile_text("OLDER 60", uids) == q.Arrived(before=NOW - timedelta(seconds=60))
    assert compile_text("NEW", uids) == q.And((q.Uids(()), q.Flag("\\Seen", present=False)))  # none \Recent
    recent = search.View(uids, NOW, recent=frozenset({9, 10}))
    assert search.compile_criteria(parse_criteria(Cursor(b"OLD")), recent) == q.Not(q.Uids(((9, 10),)))
    assert compile_text("FROM x SUBJECT y", uids) == q.And((q.From("x"), q.Subject("y")))
    assert compile_text("OR BODY a TEXT b", uids) == q.Or((q.Text("a", body_only=True), q.Text("b")))
    assert compile_text("NOT UNSEEN", uids) == q.Not(q.Flag("\\Seen", present=False))
    assert compile_text("LARGER 10", uids) == q.Size(larger_than=10)
    assert compile_text("MODSEQ 7", uids) == q.Modseq(7)
    assert compile_text('HEADER X-MSS-CODECDA ""', uids) == q.Header("x-mss-codecda", "")


@given(st.lists(st.integers(1, 500), unique=True, max_size=40).map(sorted),
       st.integers(1, 45), st.integers(1, 45))
def test_sequence_ranges_select_the_same_messages(uids: list[int], a: int, b: int):
    """A sequence set selects the messages at those positions, nothing else."""
    low, high = min(a, b), max(a, b)
    compiled = compile_text(f"{low}:{high}", uids)
    assert isinstance(compiled, q.Uids)
    chosen = [u for u in uids if q.contains(compiled.ranges, u)]
    assert chosen == uids[low - 1:high]
