"""Queue operations of the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mssmail.store.models import AuditEvent
from mssmail.store.outbound import QueueItemNotFound, RecipientResult

RAW = b"From: a@a.example\r\nSubject: s\r\n\r\nbody\r\n"


def test_enqueue_is_durable_and_audited(store):
    item_id = store.enqueue_outbound("a@a.example", ["x@b.example", "X@b.example ", "x@b.example"], RAW)
    item = store.get_outbound(item_id)
    assert [e["address"] for e in item["recipients"]] == ["x@b.example", "X@b.example"]
    assert store.blobs.read(item["blob_sha256"]) == RAW
    with store.db.read() as s:
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "relay")).scalar_one()
    assert event.message_ref == f"queue/{item_id}" and event.details["event"] == "queued"
    with pytest.raises(ValueError):
        store.enqueue_outbound("a@a.example", [" "], RAW)


def test_claim_leases_and_expired_lease_is_reclaimed(store):
    item_id = store.enqueue_outbound("a@a.example", ["x@b.example"], RAW)
    [claimed] = store.claim_outbound(5, lease_seconds=60)
    assert claimed["id"] == item_id
    assert store.claim_outbound(5, lease_seconds=60) == []  # leased
    later = datetime.now(UTC) + timedelta(seconds=61)
    [again] = store.claim_outbound(5, lease_seconds=60, now=later)  # the holder died
    assert again["id"] == item_id


def test_not_due_items_are_not_claimed(store):
    item_id = store.enqueue_outbound("a@a.example", ["x@b.example", "y@b.example"], RAW)
    store.claim_outbound(1, 60)
    future = datetime.now(UTC) + timedelta(minutes=5)
    updated = store.record_attempt(item_id, {
        "x@b.example": RecipientResult("sent", 250, "ok"),
        "y@b.example": RecipientResult("deferred", 451, "4.3.0 later"),
    }, next_attempt=future, last_error="y@b.example: 451 later")
    assert updated["state"] == "queued" and updated["attempts"] == 1
    assert store.claim_outbound(5, 60) == []
    assert store.retry_outbound(item_id) == 1
    [claimed] = store.claim_outbound(5, 60)
    # Only the pending recipient is still queued.
    assert [e["address"] for e in claimed["recipients"] if e["status"] == "queued"] == ["y@b.example"]
    final = store.record_attempt(item_id, {"y@b.example": RecipientResult("failed", 550, "5.1.1 no")},
                                 next_attempt=future)
    assert final["state"] == "failed"
    assert store.list_outbound() == []
    assert len(store.list_outbound(include_finished=True)) == 1


def test_retry_all_remove_and_errors(store):
    ids = [store.enqueue_outbound("a@a.example", [f"r{i}@b.example"], RAW) for i in range(3)]
    assert store.retry_outbound(None) == 3
    store.remove_outbound(ids[0])
    assert [i["id"] for i in store.list_outbound()] == ids[1:]
    with pytest.raises(QueueItemNotFound):
        store.remove_outbound(ids[0])
    with pytest.raises(QueueItemNotFound):
        store.retry_outbound(9999)
    with store.db.read() as s:
        admin = s.execute(select(AuditEvent).where(AuditEvent.action == "admin")).scalars().all()
    assert {e.details["event"] for e in admin} == {"queue.retry", "queue.remove"}


def test_concurrent_claimers_never_share_an_item(store):
    ids = {store.enqueue_outbound("a@a.example", [f"r{i}@b.example"], RAW) for i in range(40)}
    got: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def claimer() -> None:
        barrier.wait()
        while batch := store.claim_outbound(3, 60):
            with lock:
                got.extend(item["id"] for item in batch)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == sorted(ids)  # each exactly once
