"""\\Recent (RFC 3501 section 2.3.2), keywords announced in FLAGS (section 7.2.6), MOVE
into the selected folder and CREATE without subscribing: the store operations on SQLite
and PostgreSQL, the session's view (sans-IO) and the SEARCH keys NEW/OLD/RECENT."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from mssmail.imap import search
from mssmail.imap.searchkeys import Key
from mssmail.imap.selected import SelectedView, SyncPlan
from mssmail.store import query as q

A = "a@a.example"


def msg(n: int, date_header: str = "Sat, 24 Mar 2007 23:00:00 +0200") -> bytes:
    return (f"From: x@a.example\r\nTo: a@a.example\r\nSubject: m{n}\r\nDate: {date_header}\r\n"
            f"Message-ID: <r{n}@x>\r\n\r\nbody {n}\r\n").encode()


def test_recent_goes_to_exactly_one_session(store):
    store.create_mailbox(A, password="password-a")
    _, uids = store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(3)])
    ref = store.folder_open(A, A, "INBOX").ref
    assert store.recent_count(ref) == 3
    assert store.recent_uid(ref) == uids[0]  # EXAMINE: seen as recent, not claimed
    first = store.recent_claim(ref, max(uids))
    assert first == uids[0]  # this session: all three
    assert store.recent_count(ref) == 0
    assert store.recent_claim(ref, max(uids)) == max(uids) + 1  # the next session: none
    _, more = store.messages_append(A, A, "INBOX", [(msg(9), (), None)])
    assert store.recent_count(ref) == 1
    assert store.recent_claim(ref, more[0]) == more[0]


def test_concurrent_claims_split_the_messages(store):
    store.create_mailbox(A, password="password-a")
    _, uids = store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(5)])
    ref = store.folder_open(A, A, "INBOX").ref
    got: list[set[int]] = []
    lock = threading.Lock()

    def claim() -> None:
        start = store.recent_claim(ref, max(uids))
        with lock:
            got.append({u for u in uids if u >= start})

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(g) for g in got) == [0, 0, 0, 5]  # one session has them all


def test_keywords_in_use_and_create_unsubscribed(store):
    store.create_mailbox(A, password="password-a")
    store.messages_append(A, A, "INBOX", [(msg(1), ["\\Seen", "$Label1"], None),
                                          (msg(2), ["Projet", "$label1"], None)])
    ref = store.folder_open(A, A, "INBOX").ref
    words = store.folder_keywords(ref)
    assert "Projet" in words and {w.lower() for w in words} >= {"$label1"}
    assert not any(w.startswith("\\") for w in words)
    info = store.folder_create(A, A, "Archive", subscribed=False)
    assert not info.subscribed
    assert not next(f for f in store.folder_list(A, A) if f.name == "Archive").subscribed


def test_move_into_the_same_folder_gives_new_uids(store):
    store.create_mailbox(A, password="password-a")
    _, uids = store.messages_append(A, A, "INBOX", [(msg(i), (), None) for i in range(2)])
    ref = store.folder_open(A, A, "INBOX").ref
    _, src, dst = store.messages_copy(ref, [uids[0]], A, "INBOX", move=True)
    assert src == [uids[0]] and dst[0] > uids[-1]
    opened = store.folder_open(A, A, "INBOX")
    assert list(opened.uids) == [uids[1], dst[0]] and opened.state.messages == 2


def test_sent_dates_are_the_days_as_written(store):
    """RFC 3501 6.4.4: SENTON compares the Date: header's own day, not its UTC day."""
    store.create_mailbox(A, password="password-a")
    dates = ["Sat, 24 Mar 2007 23:00:00 +0200",  # 21:00 UTC on the 24th
             "Sun, 25 Mar 2007 00:30:00 +0200",  # 22:30 UTC on the 24th, written the 25th
             "Mon, 26 Mar 2007 00:00:00 +0300"]  # 21:00 UTC on the 25th, written the 26th
    _, uids = store.messages_append(A, A, "INBOX", [(msg(i, d), (), None) for i, d in enumerate(dates)])
    ref = store.folder_open(A, A, "INBOX").ref

    def sent(op: str, day: date) -> list[int]:
        criteria = search.compile_criteria(Key("date", day, field="sent", op=op),
                                           search.View(uids, datetime.now(UTC)))
        return list(store.search(ref, criteria).uids)

    assert sent("=", date(2007, 3, 25)) == [uids[1]]
    assert sent("=", date(2007, 3, 24)) == [uids[0]]
    assert sent("<", date(2007, 3, 26)) == uids[:2]
    assert sent(">=", date(2007, 3, 26)) == [uids[2]]


# --- the view, sans-IO --------------------------------------------------------------------

def view(uids: list[int], *, readonly: bool = False) -> SelectedView:
    return SelectedView(list(uids), 5, readonly, 1)


def test_new_messages_announce_exists_recent_and_their_keywords_first():
    v = view([1, 2])
    plan = SyncPlan([(3, "$Hello \\Seen", 6), (4, "", 6)], messages=4, highest_modseq=6)
    assert v.incoming(plan) == [3, 4]
    lines = v.apply(plan, allow_expunge=True, recent={3, 4})
    assert lines[0].startswith(b"* FLAGS (") and b"$Hello" in lines[0]
    assert b"\\*" in lines[1]  # PERMANENTFLAGS, read-write
    assert lines[2:] == [b"* 4 EXISTS", b"* 2 RECENT"]
    assert v.shown_flags(3, "$Hello \\Seen") == "\\Recent $Hello \\Seen"
    assert v.shown_flags(1, "") == ""
    assert v.announce("$Hello") == []  # announced once
    changed = SyncPlan([(1, "$World", 7)], messages=4, highest_modseq=7)
    lines = v.apply(changed, allow_expunge=True)
    assert b"$World" in lines[0] and lines[-1] == b"* 1 FETCH (UID 1 FLAGS ($World))"
    assert v.expunge([3]) == [b"* 3 EXPUNGE"] and v.recent == {4}


def test_read_only_view_offers_no_permanent_flags():
    lines = view([1], readonly=True).flags_lines()
    assert lines[1] == b"* OK [PERMANENTFLAGS ()] flags permitted"


@given(st.lists(st.lists(st.sampled_from(["$a", "$B", "\\Seen", "Work", "$b", "\\Flagged"]),
                         max_size=6), max_size=5))
def test_every_keyword_shown_was_announced(flag_sets):
    """Whatever flag strings come by, each keyword is in a FLAGS line sent before (or
    with) the first string that holds it, and FLAGS is only re-sent for a new keyword."""
    v = view([1])
    announced: set[str] = set()
    for words in flag_sets:
        new = {w.lower() for w in words if not w.startswith("\\")} - set(v.keywords)
        lines = v.announce(" ".join(words))
        assert bool(lines) == bool(new)
        if lines:
            announced = {w.lower() for w in lines[0][len(b"* FLAGS ("):-1].decode().split()}
        assert {w.lower() for w in words if not w.startswith("\\")} <= announced


def test_search_recent_new_old_compile_against_the_session():
    v = search.View([1, 2, 3], datetime.now(UTC), frozenset({2, 3}))
    rows = [(1, "", 0, None, None, "", "", "", 1, "", False, {}),
            (2, "\\Seen", 0, None, None, "", "", "", 1, "", False, {}),
            (3, "", 0, None, None, "", "", "", 1, "", False, {})]

    def run(kind: str) -> list[int]:
        criteria = search.compile_criteria(Key(kind), v)
        return q.evaluate(criteria, rows, lambda sha: b"")[0]

    assert run("recent") == [2, 3]
    assert run("new") == [3]
    assert run("old") == [1]
    empty = search.View([1], datetime.now(UTC))
    assert q.evaluate(search.compile_criteria(Key("recent"), empty), rows[:1], lambda sha: b"")[0] == []
