"""Password checks with argon2, growing delays and lockout after repeated failures.

Shared by SMTP submission, IMAP and the webmail so that an attacker cannot move to
another protocol to keep guessing. Every outcome is an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select

from mssmail import audit
from mssmail.store.models import AuthFailure, Mailbox

if TYPE_CHECKING:
    from mssmail.store.service import Store

HASHER = PasswordHasher()
# Verified when the account does not exist, so that timing does not reveal which exist.
_DUMMY_HASH = HASHER.hash("not-a-real-password")
MAX_DELAY = 30.0


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    address: str = ""
    delay: float = 0.0  # seconds the protocol layer should wait before answering
    locked: bool = False
    reason: str = ""


class AuthOps:
    @staticmethod
    def hash_password(password: str) -> str:
        return HASHER.hash(password)

    def authenticate(self: Store, address: str, password: str, *, ip: str = "",
                     service: str = "") -> AuthResult:
        address = (address or "").strip().lower()
        now = datetime.now(UTC)
        user_key = f"user:{address}"
        with self.db.read() as s:
            row = s.execute(select(Mailbox.password_hash, Mailbox.disabled, Mailbox.address)
                            .where(Mailbox.address == address)).first()
            failure = s.get(AuthFailure, user_key)
        if failure is not None and failure.locked_until and failure.locked_until > now:
            with self.db.write() as s:
                audit.record(s, audit.LOGIN_FAILURE, actor=address, ip=ip,
                             details={"service": service, "reason": "locked"})
            return AuthResult(False, address, self._delay(failure.failures), True, "account locked")
        stored_hash = row[0] if row and row[0] else _DUMMY_HASH
        try:
            verified = HASHER.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            verified = False
        if verified and row is not None and row[0] and not row[1]:
            with self.db.write() as s:
                if HASHER.check_needs_rehash(stored_hash):
                    mailbox = s.execute(select(Mailbox).where(Mailbox.address == address)).scalar_one()
                    mailbox.password_hash = HASHER.hash(password)
                existing = s.get(AuthFailure, user_key)
                if existing is not None:
                    s.delete(existing)
                audit.record(s, audit.LOGIN_SUCCESS, actor=address, ip=ip, details={"service": service})
            return AuthResult(True, address)
        reason = "disabled" if row is not None and row[1] and verified else "bad credentials"
        with self.db.write() as s:
            failures = 0
            locked = False
            for key in (user_key, f"ip:{ip}" if ip else None):
                if key is None:
                    continue
                entry = s.get(AuthFailure, key)
                if entry is None:
                    entry = AuthFailure(key=key, failures=0, last_failure=now)
                    s.add(entry)
                entry.failures += 1
                entry.last_failure = now
                if key == user_key:
                    failures = entry.failures
                    if entry.failures >= self.auth_lockout_after:
                        entry.locked_until = now + timedelta(seconds=self.auth_lockout_time)
                        locked = True
            audit.record(s, audit.LOGIN_FAILURE, actor=address, ip=ip,
                         details={"service": service, "reason": reason, "failures": failures})
            if locked:
                audit.record(s, audit.LOGIN_LOCKOUT, actor=address, ip=ip,
                             details={"service": service, "until_seconds": self.auth_lockout_time})
        return AuthResult(False, address, self._delay(failures), locked, reason)

    def _delay(self: Store, failures: int) -> float:
        if failures < self.auth_delay_after:
            return 0.0
        return min(MAX_DELAY, 0.5 * 2 ** (failures - self.auth_delay_after))

    def unlock(self: Store, address: str, actor: str = "admin") -> None:
        with self.db.write() as s:
            entry = s.get(AuthFailure, f"user:{address.lower()}")
            if entry is not None:
                s.delete(entry)
            audit.record(s, audit.ADMIN, actor=actor, mailbox=address.lower(), details={"op": "unlock"})
