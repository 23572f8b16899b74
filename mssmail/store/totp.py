"""TOTP (RFC 6238), the webmail's mandatory second factor: enrolment, check, reset.

The secret (160 random bits, base32 as authenticator apps want it) is kept AES-GCM
encrypted under a key derived with HKDF-SHA256 from DATA/pki/master.key (the secret
that already protects the users' private keys), the mailbox address as associated
data: a database dump or a row copied onto another mailbox yields no codes.

A code is accepted for the current 30-second step or one step either side (RFC 6238
section 5.2 allows a small window for clock drift and typing time), and only for a
step later than the last one accepted: a code seen once (shoulder, proxy log, replay)
is refused afterwards (section 5.2, "the verifier MUST NOT accept the second attempt
of the same OTP"). The step is moved forward with a conditional UPDATE, so two
requests racing with the same code cannot both win.

A wrong code is a failed authentication like a wrong password
(`Store.record_auth_failure`): the same per-account and per-source counters, so
guessing codes slows and blocks the source on IMAP and SMTP too.

Why pyotp: the HOTP/TOTP arithmetic (RFC 4226 dynamic truncation) and the otpauth://
URI apps scan are a small, well-kept library's job; it is checked here against the
RFC 6238 appendix B vectors (tests/unit/store/test_totp.py).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select, update

from mssmail import audit
from mssmail.store.errors import MailboxNotFound
from mssmail.store.models import Mailbox, TotpCredential, WebSession

if TYPE_CHECKING:
    from mssmail.store.service import Store

log = logging.getLogger("mss.store")

STEP = 30  # seconds (RFC 6238 section 5.2's recommended time step)
WINDOW = 1  # steps accepted either side of the current one
DIGITS = 6
KDF_INFO = b"mss totp secret v1"
SERVICE = "web"


@dataclass(frozen=True)
class TotpResult:
    ok: bool
    delay: float = 0.0  # seconds to wait before answering (the password delays)
    locked: bool = False  # the source is blocked: 429
    reason: str = ""


def key_from_master(pki_dir: str | Path) -> bytes:
    """The 256-bit key that encrypts the TOTP secrets, derived from DATA/pki/master.key
    (created there first if the server has none yet, as the key store does)."""
    from crypto.keystore import KeyStore

    master = KeyStore(pki_dir).master_secret()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KDF_INFO).derive(master)


def _seal(key: bytes, mailbox: str, secret: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, secret.encode("ascii"), mailbox.encode())


def _open(key: bytes, mailbox: str, sealed: bytes) -> str | None:
    """The secret, or None when it does not open: another key (master.key replaced) or
    a row moved to another mailbox. No code matches then; the login fails as for a
    wrong code and an administrator resets the TOTP."""
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], mailbox.encode()).decode("ascii")
    except (InvalidTag, ValueError):
        log.warning("TOTP secret of %s does not decrypt with this server's key", mailbox)
        return None


def is_active(store: Store, mailbox: str) -> bool:
    """Whether the mailbox has confirmed its TOTP (else the login goes to enrolment)."""
    with store.db.read() as s:
        return bool(s.execute(select(TotpCredential.active)
                              .where(TotpCredential.mailbox == mailbox.lower())).scalar_one_or_none())


def pending_secret(store: Store, key: bytes, mailbox: str) -> str | None:
    """The secret to show on the enrolment page: the pending one (the same across
    reloads, so a scanned QR code stays valid), a new one if there is none; None when
    TOTP is already active (an enrolment cannot replace it: `reset` first)."""
    mailbox = mailbox.lower()
    with store.db.write() as s:
        row = s.get(TotpCredential, mailbox)
        if row is not None and row.active:
            return None
        pending = _open(key, mailbox, row.secret) if row is not None else None
        if pending is not None:
            return pending
        secret = pyotp.random_base32()  # 32 base32 characters: 160 bits (RFC 4226 section 4)
        if row is None:
            s.add(TotpCredential(mailbox=mailbox, secret=_seal(key, mailbox, secret), active=False, last_step=0))
        else:  # a pending secret this key cannot open: replaced (never confirmed, nothing lost)
            row.secret = _seal(key, mailbox, secret)
        return secret


def provisioning_uri(secret: str, mailbox: str, issuer: str) -> str:
    """The otpauth:// URI of the QR code (Google Authenticator's key URI format)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(name=mailbox, issuer_name=issuer)


def _matching_step(secret: str, code: str, now: float, after: int) -> int | None:
    """The step within the window whose code is `code`, later than `after`."""
    hotp = pyotp.HOTP(secret, digits=DIGITS)
    current = int(now // STEP)
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        # Compared for every step, constant time each: the answer's timing tells nothing.
        if hmac.compare_digest(hotp.at(step), code) and step > after and found is None:
            found = step
    return found


def verify(store: Store, key: bytes, mailbox: str, code: str, *, ip: str = "", enrolling: bool = False,
           now: float | None = None) -> TotpResult:
    """Check a code for the mailbox: against its active secret, or its pending one
    when `enrolling` (a valid code then activates it). Anything but a fresh valid code
    is a failure counted like a wrong password."""
    mailbox = mailbox.lower()
    if store.source_blocked(ip):
        return TotpResult(False, locked=True, reason="source blocked")
    code = (code or "").strip().replace(" ", "")
    moment = time.time() if now is None else now
    with store.db.read() as s:
        row = s.get(TotpCredential, mailbox)
        if row is not None:
            s.expunge(row)
    step = None
    if row is not None and row.active != enrolling and len(code) == DIGITS and code.isascii() and code.isdigit():
        secret = _open(key, mailbox, row.secret)
        if secret is not None:
            step = _matching_step(secret, code, moment, row.last_step)
    if step is not None:
        with store.db.write() as s:
            result = s.execute(update(TotpCredential)
                               .where(TotpCredential.mailbox == mailbox, TotpCredential.last_step < step,
                                      TotpCredential.active == (not enrolling))
                               .values(last_step=step, active=True))
            changed = int(getattr(result, "rowcount", 0) or 0)
            if changed:
                audit.record(s, audit.LOGIN_SUCCESS, actor=mailbox, ip=ip,
                             details={"service": SERVICE, "factor": "totp",
                                      **({"op": "totp.enrol"} if enrolling else {})})
        if changed:
            return TotpResult(True)
    failed = store.record_auth_failure(mailbox, ip, SERVICE, "bad totp")
    return TotpResult(False, delay=failed.delay, reason="bad totp")


def reset(store: Store, mailbox: str, actor: str = "admin") -> bool:
    """Forget a mailbox's TOTP (lost phone): its next webmail login enrols again. Its
    open web sessions end too. Returns whether there was one. Audited `admin`."""
    mailbox = mailbox.strip().lower()
    with store.db.write() as s:
        if s.execute(select(Mailbox.id).where(Mailbox.address == mailbox)).first() is None:
            raise MailboxNotFound(f"no mailbox {mailbox}.")
        result = s.execute(delete(TotpCredential).where(TotpCredential.mailbox == mailbox))
        removed = int(getattr(result, "rowcount", 0) or 0)
        s.execute(delete(WebSession).where(WebSession.mailbox == mailbox))
        audit.record(s, audit.ADMIN, actor=actor, mailbox=mailbox, details={"op": "totp.reset"})
    return bool(removed)
