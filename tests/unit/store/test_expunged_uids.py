"""QRESYNC's memory (RFC 7162 3.2.5): every UID removed from a folder, by EXPUNGE or by
MOVE, with the mod-sequence of its removal; on SQLite and PostgreSQL."""

from __future__ import annotations

from mssmail.imap.selected import SelectedView

A = "a@a.example"


def msg(n: int) -> bytes:
    return f"From: x@a.example\r\nSubject: m{n}\r\nMessage-ID: <q{n}@x>\r\n\r\nbody {n}\r\n".encode()


def test_expunge_and_move_are_remembered_with_their_modseq(store):
    store.create_mailbox(A, password="password-a")
    _, uids = store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(5)])
    opened = store.folder_open(A, A, "INBOX")
    ref, before = opened.ref, opened.state.highest_modseq
    store.messages_store(ref, uids[:2], "+", ["\\Deleted"])
    assert store.messages_expunge(ref) == uids[:2]
    middle = store.folder_state(ref).highest_modseq
    store.messages_copy(ref, [uids[4]], A, "Sent", move=True)
    assert store.expunged_since(ref, before) == [uids[0], uids[1], uids[4]]
    assert store.expunged_since(ref, middle) == [uids[4]]  # only what went after it
    assert store.expunged_since(ref, before, [(uids[1], uids[4])]) == [uids[1], uids[4]]
    assert store.expunged_since(ref, store.folder_state(ref).highest_modseq) == []


def test_the_view_says_vanished_when_qresync_is_on():
    view = SelectedView([3, 5, 7, 9], 1, False, 1, vanished=True)
    assert view.expunge([5, 7, 11]) == [b"* VANISHED 5,7"]
    assert view.uids == [3, 9]
    plain = SelectedView([3, 5, 7], 1, False, 1)
    assert plain.expunge([5, 7]) == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
