"""The relay worker against real TLS SMTP peers on loopback (aiosmtpd), on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mssmail.queue.outbound import enqueue
from mssmail.store.api import MessageSummary
from tests.integration.test_relay_support import (
    Recorder,
    free_port,
    make_pki,
    peer_tls_context,
    relay_config,
    run_worker,
    start_peer,
)
from tests.support.mailbox import content, summaries

pytestmark = pytest.mark.timeout(90)

SENDER = "jean.martin@a.example"
RCPT = "claire.durand@b.example"
RAW = (b"From: Jean Martin <jean.martin@a.example>\r\nTo: claire.durand@b.example\r\n"
       b"Subject: Compte rendu operatoire\r\nMessage-ID: <cr-1@a.example>\r\n\r\n"
       b"Patient X: ok.\r\n.leading dot line\r\n")


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    return {
        "a": make_pki(root / "a" / "pki", "Operator A", "a.example"),
        "b": make_pki(root / "b", "Operator B", "b.example"),
        "rogue": make_pki(root / "rogue", "Rogue", "b.example"),
    }


@pytest.fixture
def data_dir(tmp_path: Path, pkis: dict[str, Path]) -> Path:
    data = tmp_path / "a"
    (data / "pki").mkdir(parents=True)
    for name in ("server.pem", "server.key", "ca.pem"):
        (data / "pki" / name).write_bytes((pkis["a"] / name).read_bytes())
    return data


@pytest.fixture
def sender_store(store):
    store.create_mailbox(SENDER, password="x" * 12)
    return store


def _inbox(store) -> list[MessageSummary]:
    return summaries(store, SENDER)


def _item(store, item_id: int) -> dict:
    return store.get_outbound(item_id)


def test_delivered_once_over_mutual_tls(sender_store, data_dir, pkis):
    store = sender_store
    port = free_port()
    recorder = Recorder()
    peer = start_peer(recorder, port, peer_tls_context(pkis["b"], pkis["a"] / "ca.pem"))
    try:
        config = relay_config(data_dir, port, pkis["b"] / "ca.pem")
        item_id = enqueue(store, SENDER, [RCPT], RAW)
        assert store.list_outbound()[0]["id"] == item_id
        done = asyncio.run(run_worker(config, store, lambda: _item(store, item_id)["state"] == "done", 30))
        assert done, _item(store, item_id)
    finally:
        peer.stop()
    assert len(recorder.messages) == 1
    got = recorder.messages[0]
    assert got["from"] == SENDER and got["to"] == [RCPT]
    assert got["content"] == RAW  # dot-stuffing undone by the peer: same bytes
    assert got["tls"] is True
    # Mutual TLS: the peer saw our certificate (subject CN a.example).
    assert got["client_cert"] is not None
    assert ((("commonName", "a.example"),) in got["client_cert"]["subject"])
    assert store.list_outbound() == []
    assert _inbox(store) == []  # no DSN on success
    item = _item(store, item_id)
    assert item["attempts"] == 1 and item["recipients"][0]["status"] == "sent"


def test_remote_down_retried_then_dsn_after_max_age(sender_store, data_dir, pkis):
    store = sender_store
    port = free_port()  # nobody listens
    config = relay_config(data_dir, port, pkis["b"] / "ca.pem", max_age="3", delay_warning_after="1h")
    item_id = enqueue(store, SENDER, [RCPT], RAW, envelope_id="env-42")
    ok = asyncio.run(run_worker(config, store, lambda: len(_inbox(store)) >= 1, 30))
    assert ok, _item(store, item_id)
    item = _item(store, item_id)
    assert item["state"] == "failed"
    assert item["attempts"] >= 2
    assert "Connection refused" in item["last_error"] or "refused" in item["last_error"].lower()
    [bounce] = _inbox(store)
    report = content(store, SENDER, bounce.uid).decode()
    assert "multipart/report; report-type=delivery-status" in report
    assert "Action: failed" in report and "Status: 5.4.7" in report
    assert f"Final-Recipient: rfc822; {RCPT}" in report
    assert "Original-Envelope-Id: env-42" in report
    assert "Subject: Compte rendu operatoire" in report  # text/rfc822-headers of the original
    assert "Patient X" not in report


def test_remote_back_before_expiry_delivered_exactly_once(sender_store, data_dir, pkis):
    store = sender_store
    port = free_port()
    recorder = Recorder()
    config = relay_config(data_dir, port, pkis["b"] / "ca.pem", max_age="60")
    item_id = enqueue(store, SENDER, [RCPT], RAW)
    peers = []

    def bring_up_after_a_failure() -> None:
        if not peers and _item(store, item_id)["attempts"] >= 1:
            peers.append(start_peer(recorder, port, peer_tls_context(pkis["b"], pkis["a"] / "ca.pem")))

    try:
        done = asyncio.run(run_worker(config, store, lambda: _item(store, item_id)["state"] == "done", 30,
                                      during=bring_up_after_a_failure))
        assert done, _item(store, item_id)
        # Keep the worker running a while longer: nothing is sent a second time.
        asyncio.run(run_worker(config, store, lambda: False, 2.5))
    finally:
        for peer in peers:
            peer.stop()
    assert len(recorder.messages) == 1
    assert _item(store, item_id)["attempts"] >= 2
    assert _inbox(store) == []


def test_peer_without_starttls_gets_nothing(sender_store, data_dir, pkis):
    store = sender_store
    port = free_port()
    recorder = Recorder()
    peer = start_peer(recorder, port, None)
    try:
        config = relay_config(data_dir, port, pkis["b"] / "ca.pem", max_age="60")
        item_id = enqueue(store, SENDER, [RCPT], RAW)
        asyncio.run(run_worker(config, store, lambda: _item(store, item_id)["attempts"] >= 2, 20))
    finally:
        peer.stop()
    item = _item(store, item_id)
    assert item["attempts"] >= 2 and item["state"] == "queued"
    assert "STARTTLS" in item["last_error"]
    assert recorder.mail_from == [] and recorder.messages == []


def test_untrusted_peer_certificate_refused(sender_store, data_dir, pkis):
    store = sender_store
    port = free_port()
    recorder = Recorder()
    peer = start_peer(recorder, port, peer_tls_context(pkis["rogue"], pkis["a"] / "ca.pem"))
    try:
        config = relay_config(data_dir, port, pkis["b"] / "ca.pem", max_age="60")
        item_id = enqueue(store, SENDER, [RCPT], RAW)
        asyncio.run(run_worker(config, store, lambda: _item(store, item_id)["attempts"] >= 1, 20))
    finally:
        peer.stop()
    item = _item(store, item_id)
    assert item["state"] == "queued"
    assert "not trusted" in item["last_error"]
    assert recorder.mail_from == [] and recorder.messages == []


def test_permanent_rejection_and_no_route(sender_store, data_dir, pkis):
    """550 for one recipient and no route for another: one DSN each; the good one delivered."""
    store = sender_store
    port = free_port()
    bad = "nobody@b.example"
    recorder = Recorder(replies={bad: "550 5.1.1 <nobody@b.example>: no such user"})
    peer = start_peer(recorder, port, peer_tls_context(pkis["b"], pkis["a"] / "ca.pem"))
    try:
        config = relay_config(data_dir, port, pkis["b"] / "ca.pem")
        item_id = enqueue(store, SENDER, [RCPT, bad, "x@c.example"], RAW)
        # A null-sender message that fails permanently: no DSN for it (RFC 3464).
        null_id = enqueue(store, "", [bad], RAW)
        asyncio.run(run_worker(config, store, lambda: _item(store, item_id)["state"] == "failed"
                               and _item(store, null_id)["state"] == "failed", 30))
    finally:
        peer.stop()
    assert [m["to"] for m in recorder.messages] == [[RCPT]]
    statuses = {e["address"]: e["status"] for e in _item(store, item_id)["recipients"]}
    assert statuses == {RCPT: "sent", bad: "failed", "x@c.example": "failed"}
    [bounce] = _inbox(store)  # one DSN: both failures of one attempt, none for <>
    report = content(store, SENDER, bounce.uid).decode()
    assert "Final-Recipient: rfc822; nobody@b.example" in report and "Status: 5.1.1" in report
    assert "Final-Recipient: rfc822; x@c.example" in report and "Status: 5.4.4" in report
    assert f"Final-Recipient: rfc822; {RCPT}" not in report


def test_delay_warning_sent_once(sender_store, data_dir, pkis):
    store = sender_store
    port = free_port()
    config = relay_config(data_dir, port, pkis["b"] / "ca.pem", max_age="60", delay_warning_after="1")
    item_id = enqueue(store, SENDER, [RCPT], RAW)
    asyncio.run(run_worker(config, store, lambda: _item(store, item_id)["attempts"] >= 3, 20))
    item = _item(store, item_id)
    assert item["state"] == "queued" and item["delay_warned"]
    [warning] = _inbox(store)
    report = content(store, SENDER, warning.uid).decode()
    assert "Action: delayed" in report and "Will-Retry-Until:" in report


def test_enqueue_wakes_the_worker_at_once(sender_store, data_dir, pkis):
    """With a one-minute poll interval, a message queued from another thread leaves at once."""
    store = sender_store
    port = free_port()
    recorder = Recorder()
    peer = start_peer(recorder, port, peer_tls_context(pkis["b"], pkis["a"] / "ca.pem"))
    config = relay_config(data_dir, port, pkis["b"] / "ca.pem", poll_interval="60")
    queued: list[int] = []

    def enqueue_later() -> None:
        if not queued:
            queued.append(enqueue(store, SENDER, [RCPT], RAW))

    async def scenario() -> float:
        from mssmail.queue.worker import RelayWorker

        worker = RelayWorker(config, store)
        await worker.start()
        try:
            await asyncio.sleep(0.5)  # the first poll found nothing; next one in 60 s
            start = asyncio.get_running_loop().time()
            await store.run(enqueue_later)
            while not recorder.messages:
                await asyncio.sleep(0.05)
                assert asyncio.get_running_loop().time() - start < 10, "the worker was not woken"
            return asyncio.get_running_loop().time() - start
        finally:
            await worker.stop(5)

    try:
        elapsed = asyncio.run(scenario())
    finally:
        peer.stop()
    assert elapsed < 10
    assert len(recorder.messages) == 1


def test_lost_blob_is_retried_then_reported_not_stuck(sender_store, data_dir, pkis):
    store = sender_store
    config = relay_config(data_dir, free_port(), pkis["b"] / "ca.pem", max_age="2")
    item_id = enqueue(store, SENDER, [RCPT], b"Subject: unique lost blob\r\n\r\nx\r\n")
    store.blobs.remove(_item(store, item_id)["blob_sha256"])
    ok = asyncio.run(run_worker(config, store, lambda: len(_inbox(store)) >= 1, 20))
    assert ok, _item(store, item_id)
    item = _item(store, item_id)
    assert item["state"] == "failed" and "local error" in item["recipients"][0]["error"]
