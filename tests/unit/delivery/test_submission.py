"""submit(): the submission service every front end calls, on a real store (SQLite and
PostgreSQL): what it refuses (nothing stored or queued), what it stores (the
recipients' copy and the Sent copy in one commit, no Sent copy when the message reached
nobody), the relay queue for remote recipients, the filters and their options."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mssmail.config import Config
from mssmail.delivery import filters
from mssmail.delivery.filters import SubmitOptions
from mssmail.delivery.submission import SubmitRefused, SubmitResult, submit
from tests.support.mailbox import content, summaries

ALICE, BOB, CAROL, LAB = "alice@a.example", "bob@a.example", "carol@a.example", "labo@a.example"
RAW = (b"From: Alice <alice@a.example>\r\nTo: bob@a.example\r\nSubject: compte rendu\r\n"
       b"\r\nBonjour.\r\n")


@pytest.fixture
def config(tmp_path) -> Config:
    config = Config()
    config.server.domain = "a.example"
    config.server.data = str(tmp_path)
    config.trust.domains = ["b.example"]
    return config


@pytest.fixture
def boxes(store) -> Iterator:
    for address in (ALICE, BOB, CAROL, LAB):
        store.create_mailbox(address)
    store.add_delegation(LAB, ALICE, "full")
    store.add_delegation(CAROL, ALICE, "read")
    yield store


@pytest.fixture
def recorded_filter() -> Iterator[list]:
    calls: list = []

    def record(sender, recipients, data, options):
        calls.append((sender, list(recipients), options))
        return data

    filters.submission_filters.append(record)
    yield calls
    filters.submission_filters.remove(record)


def _send(store, config, sender=ALICE, recipients=(BOB,), raw=RAW, **kwargs):
    return asyncio.run(submit(store, config, ALICE, sender, list(recipients), raw, ip="192.0.2.9", **kwargs))


def _subjects(store, address: str, folder: str = "INBOX") -> list[str]:
    return [m.subject for m in summaries(store, address, folder)]


def test_local_submission_stores_both_copies_in_one_commit(boxes, config, monkeypatch) -> None:
    store = boxes
    batches = []
    queue = store.queue_unprepared

    def spied(prepare, payloads):
        def prepared(batch):  # on the committer thread: the requests it commits
            works = prepare(batch)
            batches.append([work.payload for work in works])
            return works
        return queue(prepared, payloads)

    monkeypatch.setattr(store, "queue_unprepared", spied)
    result = _send(store, config, queue_id="Q1")
    assert isinstance(result, SubmitResult) and result.reply == "250 2.0.0 OK queued as Q1"
    assert result.delivered[BOB].ok and result.sent is not None and result.sent.ok and result.queued == ()
    # One request, carrying the Sent copy: one transaction for both.
    assert [len(b) for b in batches] == [1] and [r.folder for r in batches[0][0].then] == ["Sent"]
    assert _subjects(store, BOB) == ["compte rendu"] and _subjects(store, ALICE, "Sent") == ["compte rendu"]
    inbox = content(store, BOB, result.delivered[BOB].uid)
    # Date and Message-ID were missing: added (RFC 6409 8.2, 8.3).
    assert b"\r\nDate: " in b"\r\n" + inbox and b"Message-ID: <" in inbox
    assert summaries(store, ALICE, "Sent")[0].seen


def test_a_refused_submission_stores_nothing(boxes, config) -> None:
    store = boxes
    cases = {
        "sender not owned": dict(sender=BOB),
        "From: not owned": dict(raw=RAW.replace(b"alice@", b"bob@")),
        "read delegation only": dict(sender=CAROL),
        "outside the space of trust": dict(recipients=(BOB, "x@elsewhere.example")),
        "too many recipients": dict(recipients=[f"r{n}@a.example" for n in range(101)]),
        "no recipient": dict(recipients=()),
    }
    replies = {}
    for name, kwargs in cases.items():
        result = _send(store, config, **kwargs)
        assert isinstance(result, SubmitRefused), name
        replies[name] = result.reply
    assert replies["sender not owned"].startswith("553 5.7.1 ")
    assert replies["From: not owned"] == "550 5.7.1 From: header not owned by the authenticated user"
    assert replies["outside the space of trust"].startswith("550 5.7.1 Recipient domain")
    assert replies["too many recipients"].startswith("452 4.5.3")
    for address in (ALICE, BOB, CAROL):
        assert _subjects(store, address) == [] and _subjects(store, address, "Sent") == []
    assert store.list_outbound() == []


def test_no_sent_copy_when_the_message_reached_nobody(boxes, config) -> None:
    store = boxes
    store.set_disabled(BOB, True)
    result = _send(store, config)
    assert result == SubmitRefused(550, "5.2.1", "Mailbox disabled")
    assert _subjects(store, ALICE, "Sent") == []


def test_sending_as_a_delegated_mailbox_files_its_sent_copy(boxes, config) -> None:
    store = boxes
    raw = RAW.replace(b"Alice <alice@", b"Labo <labo@")
    result = _send(store, config, sender=LAB, raw=raw)
    assert isinstance(result, SubmitResult)
    assert _subjects(store, LAB, "Sent") == ["compte rendu"] and _subjects(store, ALICE, "Sent") == []


def test_remote_recipients_are_queued_and_the_sent_copy_filed(boxes, config, recorded_filter) -> None:
    store = boxes
    store.set_disabled(BOB, True)  # the local copy fails; the remote one is queued: accepted
    result = _send(store, config, recipients=(BOB, "dr.x@b.example"), trace=b"Received: from test\r\n")
    assert isinstance(result, SubmitResult) and result.queued == ("dr.x@b.example",)
    assert not result.delivered[BOB].ok
    queued = store.list_outbound()
    assert [[r["address"] for r in item["recipients"]] for item in queued] == [["dr.x@b.example"]]
    stored = store.blobs.read(queued[0]["blob_sha256"])
    assert stored.startswith(b"Received: from test\r\n")  # the trace, after the filters
    assert _subjects(store, ALICE, "Sent") == ["compte rendu"]
    sent = summaries(store, ALICE, "Sent")[0]
    assert store.blobs.read(sent.sha256) == stored  # what was queued is what was filed
    assert recorded_filter == [(ALICE, [BOB, "dr.x@b.example"], filters.NO_OPTIONS)]


def test_a_filter_refusal_stores_and_queues_nothing(boxes, config) -> None:
    store = boxes
    seen = []

    def require_encryption(sender, recipients, data, options):
        seen.append(options)
        raise filters.Reject(550, "5.7.1 No encryption certificate for bob@a.example: encryption is required")

    filters.submission_filters.append(require_encryption)
    try:
        options = SubmitOptions(sign=True, encrypt="required")
        for recipients in ((BOB,), (BOB, "dr.x@b.example")):
            result = _send(store, config, recipients=recipients, options=options)
            assert result == SubmitRefused(550, "5.7.1",
                                           "No encryption certificate for bob@a.example: encryption is required")
    finally:
        filters.submission_filters.remove(require_encryption)
    assert seen == [options, options]
    assert _subjects(store, BOB) == [] and _subjects(store, ALICE, "Sent") == [] and store.list_outbound() == []


def test_options_only_raise_the_policy() -> None:
    levels = ("never", "when-possible", "required")
    for policy_sign in (False, True):
        for policy_encrypt in levels:
            for sign in (False, True):
                for encrypt in levels:
                    got_sign, got_encrypt = SubmitOptions(sign, encrypt).raise_policy(policy_sign, policy_encrypt)
                    assert got_sign == (policy_sign or sign)
                    assert levels.index(got_encrypt) == max(levels.index(policy_encrypt), levels.index(encrypt))
    with pytest.raises(KeyError):
        SubmitOptions(encrypt="sometimes")
