"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 4), sans-IO
(mssmail/imap/thread.py); imaptest's thread* groups check the same against a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import grammar
from mssmail.imap.sort import SortInput
from mssmail.imap.thread import ordered_subject, references, render

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def msg(uid: int, *, minutes: int | None = None, **headers: str) -> SortInput:
    when = T0 + timedelta(minutes=uid if minutes is None else minutes)
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    headers.setdefault("date", when.strftime("%a, %d %b %Y %H:%M:%S +0000"))
    return SortInput(uid, 100, when, headers)


def test_render_one_child_inline_several_in_parentheses():
    items = [msg(1, subject="a"), msg(2, subject="Re: a"), msg(3, subject="re: a"), msg(4, subject="b")]
    assert render(ordered_subject(items)) == b"(1 (2)(3))(4)"
    assert render(ordered_subject(items[:2])) == b"(1 2)"
    assert render(ordered_subject(items), lambda uid: uid * 10) == b"(10 (20)(30))(40)"


def test_references_chain_missing_parent_and_subject_merge():
    items = [msg(1, message_id="<a@x>", subject="Lab"),
             msg(2, message_id="<b@x>", references="<a@x>", subject="Re: Lab"),
             msg(3, message_id="<c@x>", references="<a@x> <b@x>", subject="Re: Lab"),
             msg(4, message_id="<d@x>", in_reply_to="<gone@x>", subject="Other"),
             msg(5, message_id="<e@x>", in_reply_to="<gone@x>", subject="Re: Other"),
             msg(6, message_id="<f@x>", subject="Re: Lab")]  # no references: joined by subject
    assert render(references(items)) == b"(1 (2 3)(6))((4)(5))"


def test_references_loop_is_not_made():
    """A References loop (b cites a and c, c cites b): the link that would close the
    loop is dropped and c becomes a root, as Dovecot answers (imaptest's `thread`)."""
    items = [msg(1, message_id="<a@b>", minutes=120),
             msg(2, message_id="<b@b>", references="<a@b> <c@b>", minutes=0),
             msg(3, message_id="<c@b>", references="<b@b>", minutes=60)]
    assert render(references(items)) == b"(3 2)(1)"


def test_duplicate_message_ids_keep_both_messages():
    items = [msg(1, message_id="<same@x>", subject="x"), msg(2, message_id="<same@x>", subject="y")]
    assert render(references(items)) == b"(1)(2)"


def test_thread_grammar():
    request = grammar.parse(b"t UID THREAD REFERENCES UTF-8 SINCE 1-Jan-2026")
    assert request.uid and request.name == "THREAD" and request.args[0] == "REFERENCES"


ids = st.sampled_from(["<a@x>", "<b@x>", "<c@x>", "<d@x>", ""])


@given(st.lists(st.tuples(ids, st.lists(ids, max_size=3), st.sampled_from(["s", "Re: s", "t"])),
                max_size=12))
def test_every_message_appears_once_whatever_the_references(specs):
    """Random (and looping, duplicated, dangling) references: a forest holding each
    message exactly once, as the response must."""
    items = [msg(uid, message_id=mid, references=" ".join(r for r in refs if r), subject=subject)
             for uid, (mid, refs, subject) in enumerate(specs, 1)]
    def walk(node, seen, depth=0):
        assert depth < 100
        if node.uid is not None:
            seen.append(node.uid)
        for child in node.children:
            walk(child, seen, depth + 1)

    for threads in (references(items), ordered_subject(items)):
        seen: list[int] = []
        for root in threads:
            walk(root, seen)
        assert sorted(seen) == [i.uid for i in items]
