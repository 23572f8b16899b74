"""Concurrent deliveries written together: batched statements, isolation of a bad request.

Run on both engines (the `store` fixture): concurrent deliveries share one transaction
through the group committer; UIDs are unique and contiguous, counters add up and the
audit chain holds.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from mssmail import audit
from mssmail.store.delivery import DeliveryRequest, deliver_batch
from mssmail.store.errors import FolderNotFound
from mssmail.store.groupcommit import BatchWork, GroupCommitter, Unprepared
from mssmail.store.models import Folder, Mailbox, Message
from mssmail.store.summary import summarize


def _raw(n: int) -> bytes:
    return (f"From: a@a.example\r\nTo: b@a.example\r\nSubject: n{n}\r\n"
            f"Message-ID: <{n}@a.example>\r\n\r\nbody {n}\r\n").encode()


def test_concurrent_deliveries_get_unique_contiguous_uids(store):
    store.create_mailbox("b@a.example")
    store.create_mailbox("c@a.example")
    results: list[int] = []
    lock = threading.Lock()

    def send(k: int) -> None:
        for i in range(10):
            outcomes = store.deliver(_raw(k * 100 + i), ["b@a.example", "c@a.example"], sender="a@a.example")
            with lock:
                results.append(outcomes["b@a.example"].uid)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 121))
    with store.db.read() as s:
        for address in ("b@a.example", "c@a.example"):
            box = s.execute(select(Mailbox).where(Mailbox.address == address)).scalar_one()
            inbox = s.execute(select(Folder).where(Folder.mailbox_id == box.id, Folder.name == "INBOX")).scalar_one()
            rows = s.execute(select(func.count(), func.sum(Message.size), func.max(Message.modseq))
                             .where(Message.folder_id == inbox.id)).one()
            assert rows[0] == inbox.message_count == inbox.unseen_count == 120
            assert inbox.uidnext == 121 and rows[2] == inbox.highest_modseq
            assert box.used_bytes == rows[1]
        assert audit.verify(s).ok
        # two mailbox creations, then one delivery event per recipient
        assert s.execute(select(func.count()).select_from(audit.AuditEvent)).scalar() == 242


def _request(store, n: int, folder: str = "INBOX", targets=("b@a.example",)) -> DeliveryRequest:
    raw = _raw(n)
    return DeliveryRequest(summary=summarize(raw), sha=store.blobs.put(raw), size=len(raw), targets=tuple(targets),
                           folder=folder, flags="", seen=False, deleted=False, when=datetime.now(UTC),
                           action=audit.DELIVERY, actor="a@a.example", sender="a@a.example", ip="", extra={})


def _submit_together(committer: GroupCommitter, works: list) -> list[Future]:
    """Hold the committer busy so that every work lands in the same batch."""
    gate = threading.Event()
    futures: list[Future] = []
    blocker = threading.Thread(target=committer.submit, args=(lambda s: gate.wait(5),))
    blocker.start()
    time.sleep(0.1)
    for work in works:
        future: Future = Future()
        futures.append(future)

        def run(w=work, f=future) -> None:
            try:
                f.set_result(committer.submit(w))
            except BaseException as exc:
                f.set_exception(exc)

        threading.Thread(target=run).start()
    time.sleep(0.3)
    gate.set()
    blocker.join()
    return futures


def test_a_request_for_a_missing_folder_fails_alone(store):
    store.create_mailbox("b@a.example")
    committer = store._committer
    assert committer is not None
    works = [BatchWork(deliver_batch, _request(store, 1)),
             BatchWork(deliver_batch, _request(store, 2, folder="Nope")),
             BatchWork(deliver_batch, _request(store, 3))]
    futures = _submit_together(committer, works)
    first = futures[0].result(5).outcomes
    third = futures[2].result(5).outcomes
    with pytest.raises(FolderNotFound):
        futures[1].result(5)
    assert sorted([first["b@a.example"].uid, third["b@a.example"].uid]) == [1, 2]
    with store.db.read() as s:
        assert audit.verify(s).ok and audit.verify(s).checked == 3  # the mailbox creation, two deliveries


def test_unprepared_requests_are_made_ready_together_on_the_committer_thread(store):
    """The payloads of a batch that share a preparing function are prepared in one call,
    on the committer's thread, before anything runs; one whose preparation failed fails
    alone and the others are committed."""
    calls: list = []

    def prepare(payloads):
        calls.append((threading.current_thread().name, list(payloads)))
        return [ValueError("bad payload") if p == "bad" else (lambda _c, p=p: p.upper()) for p in payloads]

    futures = _submit_together(store._committer, [Unprepared(prepare, p) for p in ("a", "bad", "c")])
    assert futures[0].result(5) == "A" and futures[2].result(5) == "C"
    with pytest.raises(ValueError, match="bad payload"):
        futures[1].result(5)
    assert [name for name, _payloads in calls] == ["store-commit"]
    assert sorted(calls[0][1]) == ["a", "bad", "c"]


def test_a_preparing_function_that_raises_fails_its_group_only(store):
    def broken(_payloads):
        raise RuntimeError("preparing failed")

    futures = _submit_together(store._committer, [Unprepared(broken, 1), Unprepared(broken, 2),
                                                  lambda _c: "other"])
    for future in futures[:2]:
        with pytest.raises(RuntimeError, match="preparing failed"):
            future.result(5)
    assert futures[2].result(5) == "other"


def test_a_batch_that_fails_as_a_whole_falls_back_to_one_request_at_a_time(store):
    store.create_mailbox("b@a.example")
    calls: list[int] = []

    def fragile(session, requests):
        calls.append(len(requests))
        if any(r.size < 0 for r in requests):
            raise ValueError("poison")
        return deliver_batch(session, requests)

    good = _request(store, 1)
    poison = DeliveryRequest(**{**_request(store, 2).__dict__, "size": -1})
    futures = _submit_together(store._committer, [BatchWork(fragile, good), BatchWork(fragile, poison),
                                                  BatchWork(fragile, _request(store, 3))])
    assert futures[0].result(5)[0]["b@a.example"].ok
    assert futures[2].result(5)[0]["b@a.example"].ok
    with pytest.raises(ValueError, match="poison"):
        futures[1].result(5)
    assert calls[0] == 3 and calls[1:] == [1, 1, 1]
    with store.db.read() as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar() == 2
        assert audit.verify(s).ok


def _recording_committer(store, flush, deferred: bool) -> GroupCommitter:
    return GroupCommitter(store.db, flush=flush, deferred_sync=deferred)


@pytest.mark.parametrize("deferred", [True, False])
def test_a_flushing_committer_commits_only_after_the_flush(store, deferred):
    """The flush runs while the batch's statements do, and the batch commits only once it
    is done; with a deferred sync (SQLite's writer without fsync) the caller is released
    only after the next flush, which starts after that commit."""
    with store.db.write_connection() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS flush_probe (n INTEGER)")
    seen: list[int] = []

    def flush() -> None:
        time.sleep(0.2)  # the statements run meanwhile; their commit must wait
        with store.db.read() as session:
            seen.append(session.execute(text("SELECT count(*) FROM flush_probe")).scalar_one())

    committer = _recording_committer(store, flush, deferred)
    try:
        future = committer.submit_many([lambda c: c.exec_driver_sql("INSERT INTO flush_probe VALUES (1)")
                                        and "done"])[0]
        assert future.result(10) == "done"
        assert seen[0] == 0  # not committed while its flush ran
        if deferred:
            assert seen[1:] == [1]  # released after the flush that followed the commit
        else:
            assert seen == [0]
    finally:
        committer.close()
        with store.db.write_connection() as connection:
            connection.exec_driver_sql("DROP TABLE flush_probe")


def test_a_deferred_commit_is_released_by_the_next_flush_not_by_the_next_batch(store):
    """With a deferred sync, a commit is durable once the flush that started after it has
    returned: its caller is released then, even while the next batch's statements (which
    run beside that flush) are still running."""
    gate = threading.Event()
    later: list[Future] = []

    def first(_connection) -> str:
        # Queued from inside this cycle: the next batch, whose statements block.
        later.extend(committer.submit_many([lambda _c: gate.wait(10) and "second"]))
        return "first"

    committer = _recording_committer(store, lambda: None, True)
    try:
        released = committer.submit_many([first])[0]
        try:
            assert released.result(5) == "first"
            assert not later[0].done()  # the second batch is still in its statements
        finally:
            gate.set()
        assert later[0].result(10) == "second"
    finally:
        committer.close()


def test_a_failed_flush_fails_the_callers_it_was_to_make_durable(store):
    calls = {"n": 0}

    def flush() -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the one after the commit
            raise OSError(5, "I/O error")

    committer = _recording_committer(store, flush, True)
    try:
        future = committer.submit_many([lambda _connection: "written"])[0]
        with pytest.raises(OSError, match="I/O error"):
            future.result(10)
        assert committer.submit_many([lambda _connection: "next"])[0].result(10) == "next"
    finally:
        committer.close()


def test_the_store_writer_commits_without_fsync_only_when_the_committer_flushes(store):
    if not store.db.is_sqlite:
        assert store.db.writer_synchronous is None
        return
    expected = "NORMAL" if store.committer_flushes else None
    assert store.db.writer_synchronous == expected
    with store.db.write_connection() as connection:
        level = connection.connection.driver_connection.execute("PRAGMA synchronous").fetchone()[0]
    assert level == (1 if store.committer_flushes else 2)  # NORMAL = 1, FULL = 2
