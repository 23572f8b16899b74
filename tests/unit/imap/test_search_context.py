"""CONTEXT=SEARCH (RFC 5267 4): RETURN (UPDATE) notices, PARTIAL and CANCELUPDATE. The
view's notices are checked against a client model that applies them with its own
message numbers: whatever the changes and expunges, it ends with the server's result."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import grammar, seqset
from mssmail.imap.selected import SearchContext, SelectedView
from mssmail.imap.tokens import ParseError


def test_search_return_grammar():
    args = grammar.parse(b"a SEARCH RETURN (PARTIAL 4:2 COUNT) ALL").args[0]
    assert args.returns == ("PARTIAL", "COUNT") and args.partial == (2, 4)
    assert grammar.parse(b"a UID SEARCH RETURN (UPDATE) SEEN").args[0].returns == ("UPDATE",)
    assert grammar.parse(b"a SEARCH RETURN () SEEN").args[0].returns == ("ALL",)
    assert grammar.parse(b'a CANCELUPDATE "a1" "b2"').args == [["a1", "b2"]]
    for bad in (b"a SEARCH RETURN (PARTIAL 1) ALL", b"a SEARCH RETURN (PARTIAL 1:*) ALL",
                b"a SEARCH RETURN (PARTIAL *:1) ALL", b"a SEARCH RETURN (PARTIAL 0:3) ALL",
                b"a SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL", b"a SEARCH RETURN (SAVE UNKNOWN) ALL",
                b"a CANCELUPDATE", b"a CANCELUPDATE a1"):
        with pytest.raises(ParseError):
            grammar.parse(bad)


NOTICE = re.compile(rb'\* ESEARCH \(TAG "t"\)( UID)? (ADDTO|REMOVEFROM) \((\d+) ([\d:,]+)\)\Z')


class Client:
    """What a client knows: message numbers -> UIDs, and the search result (UIDs)."""

    def __init__(self, uids: list[int], result: set[int], uid: bool) -> None:
        self.uids, self.result, self.uid = list(uids), set(result), uid

    def apply(self, lines: list[bytes]) -> None:
        for line in lines:
            expunge = re.fullmatch(rb"\* (\d+) EXPUNGE", line)
            if expunge:
                del self.uids[int(expunge.group(1)) - 1]
                continue
            found = NOTICE.match(line)
            assert found, line
            assert bool(found.group(1)) == self.uid
            numbers = [n for a, b in seqset.parse(found.group(4)).ranges for n in range(a, b + 1)]
            uids = numbers if self.uid else [self.uids[n - 1] for n in numbers]
            if found.group(2) == b"ADDTO":
                self.result |= set(uids)
            else:
                assert set(uids) <= self.result
                self.result -= set(uids)


steps = st.lists(st.one_of(st.tuples(st.just("result"), st.sets(st.integers(1, 30))),
                           st.tuples(st.just("expunge"), st.sets(st.integers(1, 30)))), max_size=8)


@given(st.sets(st.integers(1, 30), min_size=1), st.sets(st.integers(1, 30)), steps, st.booleans())
def test_notices_keep_the_client_in_step(uids, first, changes, uid):
    view = SelectedView(sorted(uids), 1, False, 1)
    context = SearchContext("t", uid, None, first & uids)
    view.contexts.append(context)
    client = Client(view.uids, context.result, uid)
    for kind, numbers in changes:
        if kind == "expunge":
            client.apply(view.expunge(numbers & set(view.uids)))
        else:
            client.apply(view.context_update(context, numbers & set(view.uids)))
        assert client.result == context.result
        assert client.uids == view.uids


def test_positions_are_in_the_result():
    view = SelectedView([10, 20, 30, 40], 1, False, 1)
    context = SearchContext("t", False, None, {10, 40})
    view.contexts.append(context)
    assert view.context_update(context, {10, 20, 30, 40}) == [b'* ESEARCH (TAG "t") ADDTO (2 2:3)']
    assert view.expunge([20]) == [b'* ESEARCH (TAG "t") REMOVEFROM (2 2)', b"* 2 EXPUNGE"]


def test_notify_grammar():
    """NOTIFY (RFC 5465 8): NONE, SET [STATUS] with filters, mailbox lists and events."""
    groups, status = grammar.parse(b"a NOTIFY SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge)) "
                                   b"(subtree (Projets \"A B\") (FlagChange)) (personal NONE)").args
    assert status and [g.filter for g in groups] == ["SELECTED", "SUBTREE", "PERSONAL"]
    assert groups[0].fetch and groups[0].events == ("MESSAGENEW", "MESSAGEEXPUNGE")
    assert groups[1].mailboxes == (b"Projets", b"A B") and groups[2].events == ()
    assert grammar.parse(b"a NOTIFY NONE").args == [None, False]
    for bad in (b"a NOTIFY", b"a NOTIFY SET", b"a NOTIFY SET (everything (MessageNew))",
                b"a NOTIFY SET (personal (MessageOld))", b"a NOTIFY SET (mailboxes (MessageNew))",
                b"a NOTIFY SET (personal (MessageNew (BOGUS)))"):
        with pytest.raises(ParseError):
            grammar.parse(bad)
