"""The store on SQLite and PostgreSQL: mailboxes, delivery, quota, passwords, audit."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import update

from mssmail import audit
from mssmail.store.errors import MailboxExists, MailboxNotFound, QuotaExceeded, Refusal, StoreError
from mssmail.store.models import AuditEvent
from tests.support.mailbox import content, summaries

RAW = (b"From: a@a.example\r\nTo: b@a.example\r\nSubject: =?utf-8?q?R=C3=A9sultats?=\r\n"
       b"Message-ID: <1@a.example>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\n\r\nbody\r\n")


def test_create_and_show_mailbox(store):
    info = store.create_mailbox("Dr.Martin@A.example", "per", password="secret-pass", owner="10003456787")
    assert info["address"] == "dr.martin@a.example"
    assert info["type"] == "personal"
    shown = store.mailbox_info("dr.martin@a.example")
    assert [f["name"] for f in shown["folders"]] == ["INBOX", "Sent", "Drafts", "Trash", "Junk"]
    with pytest.raises(MailboxExists):
        store.create_mailbox("dr.martin@a.example")
    with pytest.raises(StoreError):
        store.create_mailbox("nobody-at-all")
    with pytest.raises(MailboxNotFound):
        store.mailbox_info("ghost@a.example")


def test_deliver_is_byte_identical_and_counts(store):
    store.create_mailbox("b@a.example")
    store.create_mailbox("c@a.example")
    outcomes = store.deliver(RAW, ["b@a.example", "C@a.example", "x@a.example"], sender="a@a.example")
    assert outcomes["b@a.example"].ok and outcomes["c@a.example"].ok
    assert outcomes["x@a.example"].refusal is Refusal.NO_SUCH_MAILBOX
    assert content(store, "b@a.example", outcomes["b@a.example"].uid) == RAW
    listed = summaries(store, "b@a.example")
    assert listed[0].subject == "Résultats"
    assert listed[0].sha256 == hashlib.sha256(RAW).hexdigest()
    info = store.mailbox_info("b@a.example")
    assert info["used_bytes"] == len(RAW)
    assert info["folders"][0] == {"name": "INBOX", "messages": 1, "unseen": 1, "special_use": None}


def test_uids_increase_and_are_unique_under_concurrency(store):
    store.create_mailbox("b@a.example")
    uids: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            out = store.deliver(RAW + f"{n}-{i}".encode(), ["b@a.example"])
            with lock:
                uids.append(out["b@a.example"].uid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(uids) == list(range(1, 41))
    assert store.mailbox_info("b@a.example")["folders"][0]["messages"] == 40


def test_quota_refuses_delivery_and_append(store):
    store.create_mailbox("b@a.example", quota=len(RAW) + 10)
    assert store.deliver(RAW, ["b@a.example"])["b@a.example"].ok
    second = store.deliver(RAW, ["b@a.example"])["b@a.example"]
    assert (second.ok, second.refusal) == (False, Refusal.MAILBOX_FULL)
    with pytest.raises(QuotaExceeded):
        store.append(store.open_folder("b@a.example", "b@a.example", "INBOX"), RAW)


def test_disabled_mailbox_refuses_mail(store):
    store.create_mailbox("b@a.example")
    store.set_disabled("b@a.example", True)
    assert store.deliver(RAW, ["b@a.example"])["b@a.example"].refusal is Refusal.MAILBOX_DISABLED


def test_authentication_delay_and_source_block(store):
    from mssmail.store.passwords import AuthSettings

    store.configure_auth(AuthSettings(delay_after=3, ip_block_after=4, network_block_after=100,
                                      hash_memory_kib=8, hash_time_cost=1))
    store.create_mailbox("b@a.example", password="correct horse")
    assert store.authenticate("b@a.example", "correct horse", ip="127.0.0.1").ok
    results = [store.authenticate("b@a.example", "wrong", ip="127.0.0.1") for _ in range(4)]
    assert [r.ok for r in results] == [False] * 4
    assert results[0].delay == 0 and results[3].delay > 0
    # The source is blocked: even the right password is refused from there, for now...
    blocked = store.authenticate("b@a.example", "correct horse", ip="127.0.0.1")
    assert not blocked.ok and blocked.locked and blocked.temporary
    # ...but the account is not: its owner logs in from elsewhere.
    assert store.authenticate("b@a.example", "correct horse", ip="192.0.2.7").ok
    store.unlock("127.0.0.1")
    assert store.authenticate("b@a.example", "correct horse", ip="127.0.0.1").ok
    # Unknown accounts fail the same way (no enumeration).
    assert store.authenticate("ghost@a.example", "x").reason == "bad credentials"


def test_audit_chain_detects_edit_and_removal(store):
    store.create_mailbox("b@a.example")
    store.deliver(RAW, ["b@a.example"])
    store.message_view(store.open_folder("b@a.example", "b@a.example", "INBOX"), 1, mark_seen=False)
    with store.db.read() as s:
        result = audit.verify(s)
    assert result.ok and result.checked == 3
    assert [e["action"] for e in _events(store)] == ["admin", "delivery", "read"]
    with store.db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory"))
    with store.db.read() as s:
        broken = audit.verify(s)
    assert not broken.ok and broken.broken_seq == 2


def test_audit_chain_detects_removed_row(store):
    store.create_mailbox("b@a.example")
    store.create_mailbox("c@a.example")
    store.create_mailbox("d@a.example")
    with store.db.write() as s:
        s.query(AuditEvent).filter(AuditEvent.seq == 2).delete()
    with store.db.read() as s:
        result = audit.verify(s)
    assert not result.ok and result.broken_seq == 2


def _events(store):
    with store.db.read() as s:
        return list(audit.iter_events(s))
