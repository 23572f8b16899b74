"""MessageOps (mssmail/store/messages.py) on SQLite and PostgreSQL: access, folders, UIDs,
flags with mod-sequences, expunge, copy/move, quota, audit, change notifications."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest
from sqlalchemy import select

from mssmail.store.errors import (
    AccessDenied,
    FolderExists,
    FolderNotFound,
    QuotaExceeded,
    StoreError,
)
from mssmail.store.events import FolderChanged
from mssmail.store.messages import ReadOnly, apply_flags, check_folder_name
from mssmail.store.models import AuditEvent, Mailbox

A, B, LAB = "a@a.example", "b@a.example", "lab@a.example"


def msg(n: int, body: str = "hello") -> bytes:
    return (f"From: x@a.example\r\nTo: a@a.example\r\nSubject: m{n}\r\nMessage-ID: <m{n}@x>\r\n\r\n"
            f"{body} {n}\r\n").encode()


@pytest.fixture
def boxes(store):
    store.create_mailbox(A, password="password-a")
    store.create_mailbox(B, password="password-b")
    store.create_mailbox(LAB, "organisational", password="password-lab")
    store.add_delegation(LAB, A, "full")
    store.add_delegation(LAB, B, "read")
    return store


def audit_actions(store, action: str) -> list[AuditEvent]:
    with store.db.read() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == action)
                              .order_by(AuditEvent.seq)).scalars())


def test_access_own_delegated_and_refused(boxes):
    store = boxes
    assert next(f.name for f in store.folder_list(A, A)) == "Drafts"
    assert "INBOX" in {f.name for f in store.folder_list(A, LAB)}
    with pytest.raises(AccessDenied):
        store.folder_list(B, A)
    opened = store.folder_open(B, LAB, "inbox")
    assert opened.ref.rights == "read" and not opened.ref.writable
    with pytest.raises(ReadOnly):
        store.folder_create(B, LAB, "Archive")
    with pytest.raises(ReadOnly):
        store.messages_append(B, LAB, "INBOX", [(msg(1), (), None)])
    store.messages_append(A, LAB, "INBOX", [(msg(1), (), None)])
    ref = store.folder_open(B, LAB, "INBOX").ref
    with pytest.raises(ReadOnly):
        store.messages_store(ref, [1], "+", ["\\Flagged"])


def test_append_uids_grow_and_are_never_reused(boxes):
    store = boxes
    uv, uids = store.messages_append(A, A, "INBOX", [(msg(i), ["\\Seen"] if i == 0 else [], None)
                                                      for i in range(3)])
    assert uids == [1, 2, 3]
    opened = store.folder_open(A, A, "INBOX")
    assert opened.state.uidvalidity == uv and opened.uids == [1, 2, 3]
    assert opened.state.messages == 3 and opened.state.unseen == 2 and opened.first_unseen_uid == 2
    ref = opened.ref
    store.messages_store(ref, [3], "+", ["\\Deleted"])
    assert store.messages_expunge(ref) == [3]
    _, again = store.messages_append(A, A, "INBOX", [(msg(9), (), None)])
    assert again == [4]
    assert store.folder_open(A, A, "INBOX").uids == [1, 2, 4]
    used, _quota = store.quota_of(A, A)
    assert used == sum(len(msg(i)) for i in (0, 1, 9))


def test_flags_modseq_and_unchanged_since(boxes):
    store = boxes
    store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(4)])
    ref = store.folder_open(A, A, "INBOX").ref
    before = store.folder_state(ref)
    result, failed = store.messages_store(ref, [1, 2, 99], "+", ["\\Seen", "$Label1"])
    assert failed == [] and set(result) == {1, 2}
    assert result[1][0] == "\\Seen $Label1"
    modseq = result[1][1]
    assert modseq == before.highest_modseq + 1
    state = store.folder_state(ref)
    assert state.highest_modseq == modseq and state.unseen == 2
    assert [c[0] for c in store.folder_changes(ref, before.highest_modseq)] == [1, 2]
    # No change: same flags, no new mod-sequence.
    again, _ = store.messages_store(ref, [1], "+", ["\\seen"])
    assert again[1] == ("\\Seen $Label1", modseq)
    assert store.folder_state(ref).highest_modseq == modseq
    # RFC 7162: UNCHANGEDSINCE refuses messages changed later.
    result, failed = store.messages_store(ref, [1, 3], "-", ["$label1"], unchanged_since=modseq - 1)
    assert failed == [1] and result[3][0] == ""
    result, failed = store.messages_store(ref, [1], "", ["\\Flagged"])
    assert result[1][0] == "\\Flagged" and store.folder_state(ref).unseen == 3
    assert audit_actions(store, "flags")


def test_read_is_audited_and_marks_seen(boxes):
    store = boxes
    store.messages_append(A, LAB, "INBOX", [(msg(1), (), None), (msg(2), (), None)])
    ref = store.folder_open(B, LAB, "INBOX").ref  # read-only delegate
    metas, data, seen = store.messages_read(ref, [1, 2], mark_seen=True)
    assert data[1] == msg(1) and data[2] == msg(2)
    assert all("\\Seen" not in m.flags for m in metas), "a read-only session does not set \\Seen"
    ref_a = store.folder_open(A, LAB, "INBOX").ref
    metas, _, seen = store.messages_read(ref_a, [2], mark_seen=True, ip="10.0.0.1")
    assert metas[0].flags == "\\Seen" and seen == {2}
    reads = audit_actions(store, "read")
    assert [(e.actor, e.mailbox, e.message_ref.split("/")[-1]) for e in reads] == [
        (B, LAB, "1"), (B, LAB, "2"), (A, LAB, "2")]
    assert reads[-1].remote_ip == "10.0.0.1"
    assert store.folder_state(ref_a).unseen == 1


def test_view_filter_applies_to_reads(boxes):
    store = boxes
    store.view_filters.append(lambda address, raw, extra: raw.replace(b"hello", b"HELLO"))
    store.messages_append(A, A, "INBOX", [(msg(1), (), None)])
    ref = store.folder_open(A, A, "INBOX").ref
    _, data, _ = store.messages_read(ref, [1], mark_seen=False)
    assert b"HELLO 1" in data[1]


def test_copy_move_quota_and_events(boxes):
    store = boxes
    events: list[FolderChanged] = []
    box_id = store.folder_open(A, A, "INBOX").ref.mailbox_id
    store.changes.subscribe(box_id, events.append)
    store.messages_append(A, A, "INBOX", [(msg(i), ["\\Seen"] if i else [], None) for i in range(3)])
    ref = store.folder_open(A, A, "INBOX").ref
    uv, src, dst = store.messages_copy(ref, [1, 3], A, "Trash")
    trash = store.folder_open(A, A, "Trash")
    assert uv == trash.state.uidvalidity and src == [1, 3] and dst == [1, 2] and trash.uids == [1, 2]
    used_after_copy = store.quota_of(A, A)[0]
    assert used_after_copy == sum(len(msg(i)) for i in range(3)) + len(msg(0)) + len(msg(2))
    uv, src, dst = store.messages_copy(ref, [2], A, "Trash", move=True)
    assert src == [2] and dst == [3]
    assert store.folder_open(A, A, "INBOX").uids == [1, 3]
    assert store.quota_of(A, A)[0] == used_after_copy
    assert {e.kind for e in events} >= {"new", "expunge"}
    # Moving to the organisational mailbox moves the octets too.
    uv, src, dst = store.messages_copy(ref, [1], LAB, "INBOX", move=True)
    assert dst == [1] and store.quota_of(A, LAB)[0] == len(msg(0))
    store.set_quota(B, 10)
    store.messages_append(B, B, "INBOX", [(b"x\r\n", (), None)])
    with pytest.raises(QuotaExceeded):
        store.messages_append(B, B, "INBOX", [(msg(5), (), None)])
    with pytest.raises(AccessDenied):
        store.messages_copy(ref, [3], B, "INBOX")
    ref_b = store.folder_open(B, B, "INBOX").ref
    with pytest.raises(ReadOnly):  # B may only read the lab's mailbox
        store.messages_copy(ref_b, [1], LAB, "INBOX")
    assert [e.action for e in audit_actions(store, "move")] == ["move", "move"]


def test_folders_create_rename_delete(boxes):
    store = boxes
    store.folder_create(A, A, "Projets/2026")
    store.folder_create(A, A, "Projets/2026/Q1", special_use="\\Archive")
    with pytest.raises(FolderExists):
        store.folder_create(A, A, "projets/2026".replace("p", "P"))
    with pytest.raises(StoreError):
        store.folder_create(A, A, "bad//name")
    store.messages_append(A, A, "Projets/2026", [(msg(1), (), None)])
    uv = store.folder_open(A, A, "Projets/2026").state.uidvalidity
    store.folder_rename(A, A, "Projets/2026", "Archives/2026")
    names = {f.name for f in store.folder_list(A, A)}
    assert {"Archives/2026", "Archives/2026/Q1"} <= names and "Projets/2026" not in names
    assert store.folder_open(A, A, "Archives/2026").state.uidvalidity == uv
    # RFC 3501 6.3.5: renaming INBOX moves its messages and leaves INBOX empty.
    store.messages_append(A, A, "INBOX", [(msg(2), (), None), (msg(3), (), None)])
    store.folder_rename(A, A, "INBOX", "Old")
    old_uv = store.folder_open(A, A, "Old").state.uidvalidity
    assert store.folder_open(A, A, "INBOX").uids == []
    assert store.folder_open(A, A, "Old").uids == [1, 2]
    used = store.quota_of(A, A)[0]
    assert store.folder_delete(A, A, "Old") == 2
    assert store.quota_of(A, A)[0] == used - len(msg(2)) - len(msg(3))
    with pytest.raises(FolderNotFound):
        store.folder_open(A, A, "Old")
    with pytest.raises(StoreError):
        store.folder_delete(A, A, "inbox")
    store.subscription_set(A, A, "Archives/2026", False)
    assert not {f.name: f for f in store.folder_list(A, A)}["Archives/2026"].subscribed
    # A re-created folder gets another UIDVALIDITY (RFC 3501 2.3.1.1).
    store.folder_create(A, A, "Old")
    assert store.folder_open(A, A, "Old").state.uidvalidity > old_uv


def test_expunge_uid_subset_and_counts(boxes):
    store = boxes
    store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(5)])
    ref = store.folder_open(A, A, "INBOX").ref
    store.messages_store(ref, [1, 2, 4], "+", ["\\Deleted"])
    assert store.messages_expunge(ref, [2, 3, 4]) == [2, 4]  # UIDPLUS UID EXPUNGE
    state = store.folder_state(ref)
    assert state.messages == 3 and state.unseen == 3
    assert store.folder_open(A, A, "INBOX").uids == [1, 3, 5]
    expunges = audit_actions(store, "expunge")
    assert expunges[-1].details["uids"] == "2,4"


def test_large_uid_sets_use_ranges(boxes):
    store = boxes
    store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(1200)])
    ref = store.folder_open(A, A, "INBOX").ref
    wanted = list(range(1, 1201, 2))
    result, _ = store.messages_store(ref, wanted, "+", ["\\Flagged"])
    assert sorted(result) == wanted
    metas = store.messages_meta(ref, [(a, a) for a in wanted[:60]])
    assert [m.uid for m in metas] == wanted[:60]


def test_concurrent_appends_get_distinct_uids(boxes):
    store = boxes
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(5):
                store.messages_append(A, A, "INBOX", [(msg(k * 100 + i), (), None)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.folder_open(A, A, "INBOX").uids == list(range(1, 21))
    with store.db.read() as s:
        used = s.execute(select(Mailbox.used_bytes).where(Mailbox.address == A)).scalar_one()
    assert used == sum(len(msg(k * 100 + i)) for k in range(4) for i in range(5))


def test_pure_helpers():
    assert apply_flags(["\\Seen", "$A"], "+", ["$a", "\\Flagged"]) == ["\\Seen", "$A", "\\Flagged"]
    assert apply_flags(["\\Seen", "$A"], "-", ["$a"]) == ["\\Seen"]
    assert apply_flags(["\\Seen"], "", ["x", "x"]) == ["x"]
    assert check_folder_name("inbox/Sub") == "INBOX/Sub"
    for bad in ("", "/a", "a/", "a*b", "a\x01"):
        with pytest.raises(StoreError):
            check_folder_name(bad)


def test_batched_reads_each_audited_and_chained(boxes):
    """A read of many messages records one READ event per message, with its digest, in
    one batch (audit.record_many): consecutive, chained, and `mss audit verify` holds."""
    from mssmail import audit

    store = boxes
    raws = [msg(n, "batch") for n in range(1, 121)]
    store.messages_append(A, A, "INBOX", [(raw, (), None) for raw in raws])
    appends = audit_actions(store, "append")
    assert [e.message_ref.split("/")[-1] for e in appends] == [str(n) for n in range(1, 121)]
    assert len({e.details["sha256"] for e in appends}) == 120
    ref = store.folder_open(A, A, "INBOX").ref
    metas, data, _ = store.messages_read(ref, list(range(1, 121)), mark_seen=True, ip="192.0.2.7")
    assert len(data) == 120
    reads = audit_actions(store, "read")
    assert [int(e.message_ref.split("/")[-1]) for e in reads] == list(range(1, 121))
    assert [e.details["sha256"] for e in reads] == [m.sha256 for m in metas]
    assert all(e.details.get("seen") is True and e.remote_ip == "192.0.2.7" for e in reads)
    seqs = [e.seq for e in reads]
    assert seqs == list(range(seqs[0], seqs[0] + 120))
    assert all(b.prev_hash == a.hash for a, b in pairwise(reads))
    with store.db.read() as s:
        result = audit.verify(s)
    assert result.ok, result.reason


def test_imap_cache_kept_copied_and_put(boxes):
    from mssmail.imap.fetch import cache_entry, decode_cache

    store = boxes
    store.messages_append(A, A, "INBOX", [(msg(1), (), None), (msg(2), (), None)], cache=cache_entry)
    store.messages_append(A, A, "INBOX", [(msg(3), (), None)])  # no cache given
    ref = store.folder_open(A, A, "INBOX").ref
    metas = store.messages_meta(ref, None, with_cache=True, with_date=False)
    assert [m.imap_cache is not None for m in metas] == [True, True, False]
    assert metas[0].internal_date is None and metas[0].extra == {}
    entry = decode_cache(metas[0].imap_cache)
    assert entry is not None and entry.size == len(msg(1)) and b'"m1"' in entry.env
    assert store.messages_meta(ref, None)[0].imap_cache is None  # only when asked for
    store.cache_put({metas[2].id: cache_entry(msg(3))})
    assert decode_cache(store.messages_meta(ref, [(3, 3)], with_cache=True)[0].imap_cache).size == len(msg(3))
    store.folder_create(A, A, "Archive")
    store.messages_copy(ref, [1], A, "Archive")
    copied = store.messages_meta(store.folder_open(A, A, "Archive").ref, None, with_cache=True)
    assert copied[0].imap_cache == metas[0].imap_cache


def test_remembered_uid_lists_follow_every_change(boxes):
    store = boxes
    store.messages_append(A, A, "INBOX", [(msg(n), (), None) for n in range(1, 6)])
    assert store.folder_open(A, A, "INBOX").uids == [1, 2, 3, 4, 5]
    assert store.folder_open(A, A, "INBOX").uids == [1, 2, 3, 4, 5]  # remembered
    ref = store.folder_open(A, A, "INBOX").ref
    store.messages_store(ref, [2, 4], "+", ["\\Deleted"])
    store.messages_expunge(ref)
    assert store.folder_open(A, A, "INBOX").uids == [1, 3, 5]
    store.messages_append(A, A, "INBOX", [(msg(6), (), None)])
    assert store.folder_open(A, A, "INBOX").uids == [1, 3, 5, 6]
    store.folder_create(A, A, "Archive")
    store.messages_copy(ref, [1], A, "Archive", move=True)
    assert store.folder_open(A, A, "INBOX").uids == [3, 5, 6]
    assert store.folder_open(A, A, "Archive").uids == [1]
    opened = store.folder_open(A, A, "INBOX")
    opened.uids.append(99)  # a caller's copy
    assert store.folder_open(A, A, "INBOX").uids == [3, 5, 6]
    store.folder_delete(A, A, "Archive")
    store.folder_create(A, A, "Archive")
    assert store.folder_open(A, A, "Archive").uids == []


def test_uid_range_queries_are_exact_and_share_compiled_statements(boxes):
    """messages_meta over any UID set returns exactly its members, through one compiled
    statement per size bucket (the set's shape must not fill SQLAlchemy's cache: it grew
    the process by tens of MiB under imaptest's stress mode)."""
    import random

    store = boxes
    store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(150)])
    ref = store.folder_open(A, A, "INBOX").ref
    rng = random.Random(7)
    cache = store.db.engine._compiled_cache
    sizes = set()
    for _ in range(120):
        uids = sorted(rng.sample(range(1, 160), rng.randint(0, 100)))
        ranges: list[tuple[int, int]] = []
        for uid in uids:
            if ranges and ranges[-1][1] + 1 == uid and rng.random() < 0.7:
                ranges[-1] = (ranges[-1][0], uid)
            elif not ranges or ranges[-1][1] + 1 < uid:
                ranges.append((uid, uid))
        sizes.add(len(ranges))
        expected = [u for u in range(1, 151) if any(a <= u <= b for a, b in ranges)]
        assert [m.uid for m in store.messages_meta(ref, ranges)] == expected
    before = len(cache)
    for n in sorted(sizes):  # every size again, other UIDs: nothing new to compile
        store.messages_meta(ref, [(2 * i + 1, 2 * i + 1 + n % 2) for i in range(n)])
    assert len(cache) == before
