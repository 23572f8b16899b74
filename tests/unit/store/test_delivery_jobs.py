"""Jobs committed with a delivery (`DeliveryRequest.jobs`): written in the delivery's own
transaction with the ids of its message rows, so a failure of either leaves neither;
without a job table, a delivery with jobs is refused rather than acknowledged alone."""

from __future__ import annotations

import pytest

from mssmail.store import delivery
from mssmail.store.delivery import JobSpec, deliver_batch
from mssmail.store.errors import StoreError
from mssmail.store.groupcommit import BatchWork

RAW = b"From: a@a.example\r\nSubject: jobs\r\n\r\nresults\r\n"


def _deliver(store, recipients, jobs):
    request = store.delivery_request(RAW, recipients, sender="lab@b.example", jobs=jobs)
    return store.write_grouped(BatchWork(deliver_batch, request))


def _count(store) -> int:
    with store.db.engine.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM messages").scalar_one()


def test_jobs_are_written_in_the_delivery_transaction(store, monkeypatch) -> None:
    store.create_mailbox("b@a.example")
    store.create_mailbox("c@a.example")
    written = []

    def writer(connection, entries):
        # Inside the transaction: the rows are there, not yet committed.
        count = connection.exec_driver_sql("SELECT count(*) FROM messages").scalar_one()
        written.append((count, entries))

    monkeypatch.setattr(delivery, "job_writer", writer)
    spec = JobSpec("hprim.parse", "part-2", {"part": "2"})
    outcomes, _changed, _then = _deliver(store, ["b@a.example", "c@a.example", "nobody@a.example"], [spec])
    ids = {address: o.message_id for address, o in outcomes.items() if o.ok}
    assert written == [(2, [(spec, [("b@a.example", ids["b@a.example"]), ("c@a.example", ids["c@a.example"])])])]
    written.clear()
    _deliver(store, ["nobody@a.example"], [spec])  # reached nobody: no job
    assert written == []


def test_a_failing_job_write_leaves_no_message(store, monkeypatch) -> None:
    store.create_mailbox("b@a.example")

    def writer(connection, entries):
        raise RuntimeError("job table unavailable")

    monkeypatch.setattr(delivery, "job_writer", writer)
    with pytest.raises(RuntimeError):
        _deliver(store, ["b@a.example"], [JobSpec("hprim.parse")])
    assert _count(store) == 0
    assert store.deliver(RAW, ["b@a.example"])["b@a.example"].ok  # without jobs: delivered


def test_jobs_without_a_job_table_are_refused(store, monkeypatch) -> None:
    store.create_mailbox("b@a.example")
    monkeypatch.setattr(delivery, "job_writer", None)
    with pytest.raises(StoreError, match="no job table"):
        _deliver(store, ["b@a.example"], [JobSpec("hprim.parse")])
    assert _count(store) == 0


def test_the_job_table_gets_one_job_per_delivered_row(store) -> None:
    """With the store's job table (the default writer): the jobs are claimable and name
    their message rows."""
    assert delivery.job_writer is not None
    store.create_mailbox("b@a.example")
    store.create_mailbox("c@a.example")
    spec = JobSpec("hprim.parse", "part-2", {"part": "2"})
    outcomes, _changed, _then = _deliver(store, ["b@a.example", "c@a.example"], [spec])
    claimed = store.claim_jobs("hprim.parse", "tests", 60, limit=10)
    assert sorted((j.mailbox, j.message_id, j.payload["part"]) for j in claimed) == sorted(
        (address, o.message_id, "2") for address, o in outcomes.items())
