"""SEARCHRES (RFC 5182): `$` as a sequence set, and what it names in a view."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import grammar, search, seqset
from mssmail.imap.selected import SelectedView
from mssmail.imap.tokens import ParseError
from mssmail.store import query as q


def test_dollar_is_a_sequence_set_on_its_own():
    assert seqset.parse("$").saved and seqset.parse("$") == seqset.SAVED
    for bad in ("1,$", "$:4", "$,$", "$$"):
        with pytest.raises(seqset.SeqSetError):
            seqset.parse(bad)
    for command in (b"a FETCH $ (FLAGS)", b"a UID STORE $ +FLAGS (\\Seen)", b"a UID MOVE $ Trash",
                    b"a COPY $ Archive", b"a SEARCH $ SEEN", b"a SEARCH UID $", b"a UID EXPUNGE $"):
        grammar.parse(command)
    args = grammar.parse(b"a SEARCH RETURN (SAVE MIN) UNSEEN").args[0]
    assert args.returns == ("SAVE", "MIN")
    with pytest.raises(ParseError):
        grammar.parse(b"a FETCH 1,$ FLAGS")


@given(st.sets(st.integers(1, 50), min_size=1), st.sets(st.integers(1, 50)), st.sets(st.integers(1, 50)))
def test_dollar_names_the_saved_messages_still_there(uids, saved, expunged):
    view = SelectedView(sorted(uids), 1, False, 1)
    view.saved = sorted(saved & uids)
    view.expunge(expunged & uids)
    live = [u for u in view.saved if u in set(view.uids)]
    assert view.uids_of_seqset(seqset.SAVED) == live  # no BadSequence, even when empty
    assert view.uids_of_uidset(seqset.SAVED) == live
    compiled = search.compile_criteria(grammar.parse(b"a SEARCH $").args[0].criteria,
                                       search.View(view.uids, datetime.now(UTC), frozenset(), view.saved))
    if view.saved:
        assert compiled == q.Uids(q.ranges_of(sorted(view.saved)))
    else:
        assert compiled == q.Not(q.All())
