"""The store's TOTP (RFC 6238), on SQLite and PostgreSQL: the RFC's own test vectors,
enrolment, the ±1 step window, replays refused (section 5.2), the secret encrypted at
rest, wrong codes counted with the password failures (so they block IMAP/SMTP too),
and the administrator's reset."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select

from mssmail.store import totp, websessions
from mssmail.store.errors import MailboxNotFound
from mssmail.store.models import AuditEvent, AuthFailure, TotpCredential
from mssmail.store.passwords import AuthSettings

DOC = "doc@a.example"
KEY = bytes(range(32))
IP = "198.51.100.9"


@pytest.fixture
def doc_store(store):
    store.configure_auth(AuthSettings(delay_after=100, ip_block_after=4, network_block_after=100,
                                      hash_memory_kib=1024, hash_time_cost=1))
    store.create_mailbox(DOC, password="a long enough password")
    return store


def enrolled(store, now: float) -> str:
    secret = totp.pending_secret(store, KEY, DOC)
    assert totp.verify(store, KEY, DOC, pyotp.TOTP(secret).at(now), enrolling=True, now=now).ok
    return secret


def test_rfc6238_appendix_b_vectors() -> None:
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890": the library's arithmetic
    # (the 6-digit code is the 8-digit one's last six, RFC 4226 section 5.3).
    seed = base64.b32encode(b"12345678901234567890").decode()
    for when, eight in ((59, "94287082"), (1111111109, "07081804"), (1234567890, "89005924"),
                        (2000000000, "69279037")):
        assert pyotp.TOTP(seed, digits=8).at(when) == eight
        assert pyotp.TOTP(seed).at(when) == eight[-6:]


def test_enrolment_pending_until_the_first_code(doc_store) -> None:
    secret = totp.pending_secret(doc_store, KEY, DOC)
    assert len(base64.b32decode(secret)) == 20  # 160 bits
    assert totp.pending_secret(doc_store, KEY, DOC) == secret  # the same on reload
    assert not totp.is_active(doc_store, DOC)
    now = time.time()
    code = pyotp.TOTP(secret).at(now)
    # Not usable as a login code before it is confirmed.
    assert not totp.verify(doc_store, KEY, DOC, code, now=now).ok
    assert totp.verify(doc_store, KEY, DOC, pyotp.TOTP(secret).at(now + 30), enrolling=True, now=now).ok
    assert totp.is_active(doc_store, DOC)
    assert totp.pending_secret(doc_store, KEY, DOC) is None  # active: no second enrolment


def test_secret_encrypted_at_rest_and_bound_to_the_mailbox(doc_store) -> None:
    secret = totp.pending_secret(doc_store, KEY, DOC)
    with doc_store.db.read() as s:
        sealed = s.execute(select(TotpCredential.secret)).scalar_one()
    assert secret.encode() not in sealed and base64.b32decode(secret) not in sealed
    # Another key (master.key replaced) or another mailbox's row: no code matches.
    now = time.time()
    assert not totp.verify(doc_store, bytes(32), DOC, pyotp.TOTP(secret).at(now), enrolling=True, now=now).ok
    assert totp._open(KEY, "other@a.example", sealed) is None
    assert totp._open(KEY, DOC, sealed) == secret


def test_window_is_one_step_either_side(doc_store) -> None:
    now = 1_800_000_015.0
    secret = enrolled(doc_store, now - 90)
    hotp, step = pyotp.HOTP(secret), int(now // 30)
    assert not totp.verify(doc_store, KEY, DOC, hotp.at(step - 2), now=now).ok
    assert not totp.verify(doc_store, KEY, DOC, hotp.at(step + 2), now=now).ok
    assert totp.verify(doc_store, KEY, DOC, hotp.at(step - 1), now=now).ok
    assert totp.verify(doc_store, KEY, DOC, hotp.at(step + 1), now=now).ok


def test_replayed_or_older_code_refused(doc_store) -> None:
    now = 1_800_000_015.0
    secret = enrolled(doc_store, now - 90)
    hotp, step = pyotp.HOTP(secret), int(now // 30)
    assert totp.verify(doc_store, KEY, DOC, hotp.at(step), now=now).ok
    replay = totp.verify(doc_store, KEY, DOC, hotp.at(step), now=now)
    assert not replay.ok and replay.reason == "bad totp"
    assert not totp.verify(doc_store, KEY, DOC, hotp.at(step - 1), now=now).ok  # older than the last
    assert totp.verify(doc_store, KEY, DOC, hotp.at(step + 1), now=now).ok  # the next code is fine
    with doc_store.db.read() as s:
        assert s.execute(select(TotpCredential.last_step)).scalar_one() == step + 1


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "000000"])
def test_malformed_or_wrong_codes_fail(doc_store, bad: str) -> None:
    now = time.time()
    secret = enrolled(doc_store, now)
    if bad == "000000" and pyotp.TOTP(secret).verify(bad, for_time=now, valid_window=1):
        pytest.skip("000000 happens to be valid now")
    assert not totp.verify(doc_store, KEY, DOC, bad, now=now + 30).ok


def test_wrong_codes_count_with_password_failures_and_block_the_source(doc_store) -> None:
    now = time.time()
    secret = enrolled(doc_store, now)
    valid = {pyotp.TOTP(secret).at(now + d) for d in (0, 30, 60, 90)}
    wrong = next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in valid)
    for _ in range(3):
        assert totp.verify(doc_store, KEY, DOC, wrong, ip=IP, now=now + 30).reason == "bad totp"
    with doc_store.db.read() as s:
        counts = {e.key: e.failures for e in s.execute(select(AuthFailure)).scalars()}
        reasons = [e.details.get("reason") for e in s.execute(select(AuditEvent).where(
            AuditEvent.action == "login.failure")).scalars()]
    assert counts[f"user:{DOC}"] == 3 and counts[f"ip:{IP}"] == 3
    assert reasons == ["bad totp"] * 3
    # One wrong password more reaches the source's limit (4): the counters are shared.
    assert not doc_store.authenticate(DOC, "wrong", ip=IP, service="imap").ok
    assert doc_store.source_blocked(IP)
    locked = totp.verify(doc_store, KEY, DOC, pyotp.TOTP(secret).at(now + 60), ip=IP, now=now + 60)
    assert not locked.ok and locked.locked
    # ...and the right password from that source is refused on IMAP and SMTP too.
    for service in ("imap", "submission"):
        assert doc_store.authenticate(DOC, "a long enough password", ip=IP, service=service).locked


def test_reset_forgets_the_secret_and_ends_web_sessions(doc_store) -> None:
    enrolled(doc_store, time.time())
    token, _ = websessions.create_session(doc_store, DOC, auth_level="totp", idle=900, max_age=3600)
    assert totp.reset(doc_store, DOC, actor="root") is True
    assert not totp.is_active(doc_store, DOC)
    assert websessions.session_for(doc_store, token, idle=900, max_age=3600) is None
    assert totp.reset(doc_store, DOC) is False
    with doc_store.db.read() as s:
        ops = [(e.actor, e.details.get("op")) for e in s.execute(select(AuditEvent).where(
            AuditEvent.action == "admin")).scalars()]
    assert ("root", "totp.reset") in ops
    with pytest.raises(MailboxNotFound):
        totp.reset(doc_store, "nobody@a.example")


def test_key_from_master_is_stable_and_creates_the_master_key(tmp_path: Path) -> None:
    first = totp.key_from_master(tmp_path / "pki")
    assert (tmp_path / "pki" / "master.key").exists() and len(first) == 32
    assert totp.key_from_master(tmp_path / "pki") == first
    (tmp_path / "other").mkdir()
    assert totp.key_from_master(tmp_path / "other") != first
