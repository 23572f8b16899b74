"""The store's job table on SQLite and PostgreSQL: idempotent insert in the caller's
transaction, leases, concurrent claimers, retries and dead letters."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from mssmail import audit
from mssmail.store.actors import Actor
from mssmail.store.jobs import (
    DEAD,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    JobNotFound,
    LeaseLost,
    NewJob,
    enqueue,
    job_key,
    retry_delay,
)
from mssmail.store.models import AuditEvent, Message
from mssmail.store.service import Store


def test_enqueue_is_idempotent_by_key(store: Store):
    key = job_key("doc@a.example", "<m1@lab>", 2, "folder:/dui")
    assert len(key) == 64 and key == job_key("doc@a.example", "<m1@lab>", 2, "folder:/dui")
    assert store.enqueue_jobs(NewJob("connector.folder", key, {"part": 2}, mailbox="Doc@A.example")) == 1
    assert store.enqueue_jobs([NewJob("connector.folder", key, {"part": 3}),
                               NewJob("connector.fhir", job_key("other"))]) == 1
    twice = job_key("twice")  # the same key twice in one call: one job (one multi-row statement)
    assert store.enqueue_jobs([NewJob("connector.fhir", twice), NewJob("connector.fhir", twice)]) == 1
    jobs = {j.key: j for j in store.list_jobs()}
    assert len(jobs) == 3
    assert jobs[key].payload == {"part": 2} and jobs[key].mailbox == "doc@a.example"
    assert jobs[key].state == PENDING and jobs[key].attempts == 0
    with pytest.raises(ValueError):
        store.enqueue_jobs(NewJob("k", "x" * 201))


def test_jobs_commit_and_roll_back_with_the_callers_transaction(store: Store):
    """A job inserted with a message's rows exists if and only if the message does."""
    store.create_mailbox("doc@a.example")
    ref = store.open_folder("doc@a.example", "doc@a.example", "INBOX")

    def deliver(fail: bool, key: str) -> None:
        with store.db.write() as s:
            new_id = s.execute(insert(Message).values(
                folder_id=ref.folder_id, uid=99 if fail else 98, blob_sha256="0" * 64, size=1,
                flags="", extra={}).returning(Message.id)).scalar_one()
            assert enqueue(s, NewJob("connector.folder", key, message_id=new_id)) == 1
            if fail:
                raise RuntimeError("the delivery fails after its jobs were inserted")

    with pytest.raises(RuntimeError):
        deliver(True, "rolled-back")
    deliver(False, "kept")
    assert [j.key for j in store.list_jobs()] == ["kept"]
    with store.db.read() as s:
        [message_id] = s.execute(select(Message.id).where(Message.uid == 98)).scalars()
    assert store.list_jobs(message_id=message_id)[0].key == "kept"
    # And with a Core connection, as the delivery's group commit uses.
    assert store.write_grouped(lambda conn: enqueue(conn, NewJob("mdn", "grouped"))) == 1
    assert store.write_grouped(lambda conn: enqueue(conn, NewJob("mdn", "grouped"))) == 0


def test_a_job_inserted_claimed_and_completed_in_hand(store: Store):
    """NewJob with lease_owner: inserted running, one attempt, its progress recorded;
    complete_held completes it (progress merged) only while it is still the worker's,
    and jobs_by_key finds jobs by key inside and outside a unit."""
    with store.db.unit():
        store.enqueue_jobs([NewJob("a", "held", progress={"tmp": "/x"}, lease_owner="w1", lease_seconds=30),
                            NewJob("a", "free")])
        found = store.jobs_by_key(["held", "free", "missing"])  # the unit's own inserts
    assert set(found) == {"held", "free"}
    held, free = found["held"], found["free"]
    assert held.state == RUNNING and held.lease_owner == "w1" and held.attempts == 1
    assert held.progress == {"tmp": "/x"} and held.lease_until is not None
    assert free.state == PENDING and free.lease_owner is None
    [claimed] = store.claim_jobs("a", "w2", 60)  # the held job is not due: its lease runs
    assert claimed.id == free.id
    assert store.complete_held([(held, {"outcome": "written"})], "w2") == []  # not w2's
    assert store.complete_held([(held, {"outcome": "written"})], "w1") == [held.id]
    done = store.get_job(held.id)
    assert done.state == DONE and done.lease_owner is None and done.finished_at is not None
    assert done.progress == {"tmp": "/x", "outcome": "written"}
    assert store.complete_held([(held, {})], "w1") == []  # done is done


def test_claim_lease_complete_and_lease_lost(store: Store):
    store.enqueue_jobs([NewJob("a", "j1"), NewJob("a", "j2"), NewJob("b", "j3")])
    now = datetime.now(UTC)
    [first] = store.claim_jobs("a", "w1", 60, now=now)
    assert first.state == RUNNING and first.lease_owner == "w1" and first.attempts == 1
    assert first.lease_until == now + timedelta(seconds=60)
    [second] = store.claim_jobs("a", "w2", 60, now=now)
    assert second.id != first.id
    assert store.claim_jobs("a", "w3", 60, now=now) == []  # both leased
    store.checkpoint_job(first.id, "w1", {"temp": "written"})
    store.checkpoint_job(first.id, "w1", {"renamed": False})
    # w1 dies: its lease runs out and w3 takes the job over, with what w1 recorded.
    later = now + timedelta(seconds=61)
    [taken] = store.claim_jobs("a", "w3", 60, now=later)
    assert taken.id == first.id and taken.attempts == 2
    assert taken.progress == {"temp": "written", "renamed": False}
    with pytest.raises(LeaseLost):
        store.complete_job(first.id, "w1")
    with pytest.raises(LeaseLost):
        store.checkpoint_job(first.id, "w1", {"x": 1})
    store.complete_job(first.id, "w3", progress={"renamed": True})
    done = store.get_job(first.id)
    assert done.state == DONE and done.lease_owner is None and done.finished_at is not None
    assert done.progress["renamed"] is True
    with pytest.raises(LeaseLost):
        store.complete_job(first.id, "w3")  # done is done
    with pytest.raises(JobNotFound):
        store.get_job(10_000)


def test_retry_then_dead_letter_then_operator_retry(store: Store):
    store.enqueue_jobs(NewJob("mllp", "j"))
    now = datetime.now(UTC)
    [job] = store.claim_jobs("mllp", "w", 30, now=now)
    retry_at = now + timedelta(minutes=5)
    assert store.fail_job(job.id, "w", "AR from the peer", retry_at=retry_at) == FAILED
    failed = store.get_job(job.id)
    assert failed.last_error == "AR from the peer" and failed.next_attempt == retry_at
    assert store.claim_jobs("mllp", "w", 30, now=now + timedelta(minutes=4)) == []
    [again] = store.claim_jobs("mllp", "w", 30, now=now + timedelta(minutes=5))
    assert again.attempts == 2
    assert store.fail_job(job.id, "w", "AE 902 unknown patient") == DEAD
    assert store.claim_jobs("mllp", "w", 30, now=now + timedelta(days=3)) == []
    assert [j.id for j in store.list_jobs(state=DEAD)] == [job.id]
    assert store.retry_dead(Actor.admin("ops"), kind="mllp") == 1
    revived = store.get_job(job.id)
    assert revived.state == PENDING and revived.attempts == 0 and revived.last_error.startswith("AE 902")
    with pytest.raises(JobNotFound):
        store.retry_dead(Actor.admin("ops"), job_id=job.id)  # not dead any more
    with store.db.read() as s:
        events = s.execute(select(AuditEvent).where(AuditEvent.action == audit.ADMIN)).scalars().all()
    assert any(e.actor == "admin:ops" and e.details["op"] == "jobs.retry_dead" for e in events)


def test_two_concurrent_claimers_never_share_a_job(db_url: str, tmp_path: Path):
    """Two stores (two processes' worth of pools) claim 300 jobs at once: each job is
    claimed exactly once (SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite)."""
    first = Store(db_url, tmp_path / "blobs", pool_size=3)
    first.migrate()
    second = Store(db_url, tmp_path / "blobs", pool_size=3)
    try:
        first.enqueue_jobs([NewJob("load", f"job-{n}") for n in range(300)])
        claimed: dict[str, list[int]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def claimer(store: Store, name: str) -> None:
            mine = claimed.setdefault(name, [])
            try:
                start.wait()
                while True:
                    jobs = store.claim_jobs("load", name, 300, limit=7)
                    if not jobs:
                        return
                    for job in jobs:
                        mine.append(job.id)
                        store.complete_job(job.id, name)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=claimer, args=(s, f"{tag}-{i}"))
                   for i, (s, tag) in enumerate([(first, "p1"), (first, "p1"), (second, "p2"), (second, "p2")])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        every = [job_id for ids in claimed.values() for job_id in ids]
        assert len(every) == 300 and len(set(every)) == 300
        assert {j.state for j in first.list_jobs(limit=1000)} == {DONE}
    finally:
        second.close()
        first.close()


def test_retry_delay_grows_and_is_bounded():
    rng = random.Random(7)
    delays = [retry_delay(n, rng=rng).total_seconds() for n in range(1, 20)]
    assert 15 <= delays[0] <= 30
    assert all(d <= 6 * 3600 for d in delays)
    assert delays[-1] >= 3 * 3600  # capped at 6 h, jittered over its upper half
