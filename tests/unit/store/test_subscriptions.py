"""The subscription list (mssmail/store/subscriptions.py) on SQLite and PostgreSQL, and
the migration that turned `folders.subscribed` into it (0008)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from mssmail.store.db import make_engine
from mssmail.store.errors import AccessDenied
from mssmail.store.messages import FolderNameError
from mssmail.store.migrate import alembic_config
from mssmail.store.subscriptions import MAX_SUBSCRIPTIONS, TooManySubscriptions

A = "a@a.example"
B = "b@a.example"
LAB = "lab@a.example"


def test_default_folders_are_subscribed_and_create_may_not_subscribe(store):
    store.create_mailbox(A, password="password-a")
    defaults = {folder for _, folder in store.subscriptions(A)}
    assert "INBOX" in defaults and "Sent" in defaults
    store.folder_create(A, A, "Patients", subscribed=False)  # IMAP CREATE (RFC 3501 6.3.3)
    store.folder_create(A, A, "Projets")  # the webmail's
    listed = {f.name: f.subscribed for f in store.folder_list(A, A)}
    assert listed["Patients"] is False and listed["Projets"] is True and listed["INBOX"] is True


def test_a_subscription_outlives_its_folder_and_follows_a_rename(store):
    store.create_mailbox(A, password="password-a")
    store.folder_create(A, A, "Old/Child", subscribed=False)
    store.subscription_set(A, A, "Old/Child", True)
    store.subscription_set(A, A, "Old/Child", True)  # idempotent
    store.subscription_set(A, A, "Nowhere", True)  # no such folder: allowed
    store.folder_rename(A, A, "Old/Child", "New/Child")
    assert (A, "New/Child") in store.subscriptions(A) and (A, "Old/Child") not in store.subscriptions(A)
    store.folder_delete(A, A, "New/Child")
    # RFC 3501 6.3.6: the server does not remove a name because its folder went.
    assert (A, "New/Child") in store.subscriptions(A) and (A, "Nowhere") in store.subscriptions(A)
    store.subscription_set(A, A, "Nowhere", False)
    store.subscription_set(A, A, "Nowhere", False)
    assert (A, "Nowhere") not in store.subscriptions(A)
    with pytest.raises(FolderNameError):
        store.subscription_set(A, A, "bad/../name", True)


def test_each_user_has_its_own_list_of_a_shared_mailbox(store):
    for address in (A, B, LAB):
        store.create_mailbox(address, password="password-x")
    store.add_delegation(LAB, A)
    store.subscription_set(A, LAB, "INBOX", True)
    assert (LAB, "INBOX") in store.subscriptions(A)
    assert (LAB, "INBOX") not in store.subscriptions(B)
    assert {f.name: f.subscribed for f in store.folder_list(A, LAB)}["INBOX"] is True
    store.subscription_set(LAB, LAB, "INBOX", False)  # the lab's own list
    assert {f.name: f.subscribed for f in store.folder_list(A, LAB)}["INBOX"] is True
    with pytest.raises(AccessDenied):
        store.subscription_set(B, LAB, "INBOX", True)  # B is not a delegate


def test_the_list_is_bounded(store, monkeypatch):
    import mssmail.store.subscriptions as subscriptions

    store.create_mailbox(A, password="password-a")
    monkeypatch.setattr(subscriptions, "MAX_SUBSCRIPTIONS", len(store.subscriptions(A)) + 1)
    store.subscription_set(A, A, "One", True)
    with pytest.raises(TooManySubscriptions):
        store.subscription_set(A, A, "Two", True)
    assert MAX_SUBSCRIPTIONS >= 1000


def test_migration_keeps_what_was_subscribed(db_url):
    engine = make_engine(db_url, pool_size=1)
    cfg = alembic_config(engine)
    command.upgrade(cfg, "0007_mail_totp")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO domains (id, name, created_at) VALUES (1, 'a.example', CURRENT_TIMESTAMP)"))
        conn.execute(text(
            "INSERT INTO mailboxes (id, address, domain_id, type, quota_bytes, used_bytes, disabled, "
            "settings, created_at) VALUES (1, :a, 1, 'personal', 100, 0, false, '{}', CURRENT_TIMESTAMP)"),
            {"a": A})
        for i, (name, subscribed) in enumerate([("INBOX", True), ("Sent", True), ("Hidden", False)], 1):
            conn.execute(text(
                "INSERT INTO folders (id, mailbox_id, name, subscribed, uidvalidity, uidnext, highest_modseq, "
                "message_count, unseen_count, created_at, recent_uid) "
                "VALUES (:i, 1, :n, :s, 1, 1, 1, 0, 0, CURRENT_TIMESTAMP, 1)"), {"i": i, "n": name, "s": subscribed})
    command.upgrade(cfg, "0008_mail_subscriptions")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT subscriber_id, address, folder FROM subscriptions ORDER BY folder")).all()
    assert [tuple(r) for r in rows] == [(1, A, "INBOX"), (1, A, "Sent")]
    command.downgrade(cfg, "0007_mail_totp")
    with engine.connect() as conn:
        back = dict(conn.execute(text("SELECT name, subscribed FROM folders")).all())
    assert {k: bool(v) for k, v in back.items()} == {"INBOX": True, "Sent": True, "Hidden": False}
    engine.dispose()
