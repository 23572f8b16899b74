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
from sqlalchemy import func, select

from mssmail import audit
from mssmail.store.delivery import DeliveryRequest, deliver_batch
from mssmail.store.errors import FolderNotFound
from mssmail.store.groupcommit import BatchWork, GroupCommitter
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
    first, _ = futures[0].result(5)
    third, _ = futures[2].result(5)
    with pytest.raises(FolderNotFound):
        futures[1].result(5)
    assert sorted([first["b@a.example"].uid, third["b@a.example"].uid]) == [1, 2]
    with store.db.read() as s:
        assert audit.verify(s).ok and audit.verify(s).checked == 3  # the mailbox creation, two deliveries


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
