"""store.token_login: the identity of a valid bearer token -> the mailbox, counted and
audited as a login (mssmail/store/passwords.py)."""

from __future__ import annotations

from sqlalchemy import select

from mssmail.store.models import AuditEvent
from mssmail.store.passwords import national_rpps

RPPS = "10003456786"


def test_national_rpps():
    assert national_rpps("8" + RPPS) == RPPS
    assert national_rpps(RPPS) == RPPS
    for other in ("0" + "123456789", "8" + RPPS + "1", "81000345678x", ""):
        assert national_rpps(other) is None


def test_rpps_to_the_personal_box(store):
    store.create_mailbox("jean@a.example", "personal", owner=RPPS)
    store.create_mailbox("cabinet@a.example", "organisational", owner=RPPS)  # not a PER box
    result = store.token_login("", "8" + RPPS, "rpps", ip="192.0.2.1", service="web", mechanism="psc")
    assert result.ok and result.address == "jean@a.example"
    with store.db.read() as s:
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "login.success")
                          .order_by(AuditEvent.id.desc())).scalars().first()
    assert event is not None and event.details["mechanism"] == "psc"
    # Naming the box explicitly works; naming another one does not.
    assert store.token_login("JEAN@a.example", RPPS, "rpps").ok
    refused = store.token_login("cabinet@a.example", RPPS, "rpps", ip="192.0.2.1", service="imap")
    assert not refused.ok and refused.reason == "token for another user"


def test_ambiguous_unknown_and_disabled(store):
    store.create_mailbox("one@a.example", "personal", owner=RPPS)
    store.create_mailbox("two@a.example", "personal", owner="8" + RPPS)
    result = store.token_login("", RPPS, "rpps", ip="192.0.2.1", service="web")
    assert not result.ok and result.reason == "token names several mailboxes"
    assert store.token_login("two@a.example", RPPS, "rpps").ok
    assert store.token_login("", "10005678908", "rpps").reason == "no mailbox for the token"
    store.set_disabled("one@a.example", True)
    assert store.token_login("one@a.example", RPPS, "rpps").reason == "disabled"


def test_address_identity_and_failures_feed_the_source_block(store):
    store.create_mailbox("claire@a.example", "personal")
    assert store.token_login("", "Claire@A.example", "address").address == "claire@a.example"
    for _ in range(store.auth_state.settings.ip_block_after):
        assert not store.token_login("claire@a.example", "mallory@a.example", "address",
                                     ip="198.51.100.7", service="imap").ok
    assert store.source_blocked("198.51.100.7")
