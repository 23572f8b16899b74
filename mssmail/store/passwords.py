"""Password checks: Argon2 on a pool of its own, a short success cache, and throttling
of the *source* of failures (never lockout of the account).

Shared by SMTP submission, IMAP, LDAP and the webmail so that an attacker cannot move
to another protocol to keep guessing. Every outcome is an audit event.

Why this shape (issue 12, holes 7 and 8):

- Argon2 is memory-hard on purpose: one check of the old defaults took 64 MB and half
  a second here. Run on the store's shared threads, a few connections trying random
  users slowed every delivery. Checks now run on `HashPool`, a few threads of their
  own behind a bounded queue; when the queue is full the answer is an immediate
  temporary failure (SMTP 454; IMAP still answers a plain NO), so the cost an unauthenticated
  peer can impose is bounded by `auth_hash_workers` x `auth_hash_memory`.
- A client that logs in every minute (a DUI program) need not pay a hash each time: a
  success is remembered for `auth_cache_ttl` seconds under an HMAC of the credentials
  with a key that lives only in this process's memory. The entry also remembers the
  stored hash it was checked against, so a password change or a disabled mailbox
  invalidates it at once (both are read from the database on every login).
- Failures are counted per source address, per source network (/24 for IPv4, /64 for
  IPv6: one host rarely owns a single address of those) and per account. Like
  Dovecot's auth_penalty, failures slow the answer down; like Postfix's anvil, a
  source over its budget is refused for a while, with a temporary error and without
  spending a hash. The account itself is never locked: strangers failing against it
  make *their* answers slower, never the owner's login. Every counter expires
  `auth_failure_window` seconds after its last failure, and a block ends with its
  counter reset, so one wrong try after a block does not block again.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select

from mssmail import audit, logs
from mssmail.store.models import AuthFailure, Mailbox

if TYPE_CHECKING:
    from mssmail.store.service import Store

log = logging.getLogger("mss.auth")
# OWASP's Password Storage Cheat Sheet minimum for argon2id: m=19 MiB, t=2, p=1. On
# the development machine (2 shared cores) one check took about 95 ms with these,
# against 570 ms with argon2-cffi's defaults (64 MiB, t=3, p=4). `mss check` prints
# the time of one check with the configured parameters on the machine it runs on.
DEFAULT_MEMORY_KIB = 19 * 1024
DEFAULT_TIME_COST = 2
DEFAULT_PARALLELISM = 1
# For code that hashes outside a store (mss init's directory admin password).
HASHER = PasswordHasher(time_cost=DEFAULT_TIME_COST, memory_cost=DEFAULT_MEMORY_KIB,
                        parallelism=DEFAULT_PARALLELISM)
MAX_DELAY = 30.0
CACHE_SIZE = 10_000


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    address: str = ""
    delay: float = 0.0  # seconds the protocol layer should wait before answering
    locked: bool = False  # the *source* is blocked for a while (never the account)
    reason: str = ""
    # Try again later: the source is blocked or the hash pool is full. SMTP answers
    # 454 4.7.0 (RFC 4954 6); IMAP says NO [UNAVAILABLE] (RFC 5530 3) when the pool is full.
    temporary: bool = False


@dataclass(frozen=True)
class AuthSettings:
    """[limits] auth_* settings (see conf/mss.example.toml)."""

    delay_after: int = 3
    ip_block_after: int = 10
    network_block_after: int = 30
    block_time: float = 900.0
    failure_window: float = 900.0
    hash_memory_kib: int = DEFAULT_MEMORY_KIB
    hash_time_cost: int = DEFAULT_TIME_COST
    hash_parallelism: int = DEFAULT_PARALLELISM
    hash_workers: int = 2
    hash_queue: int = 16
    cache_ttl: float = 120.0

    @classmethod
    def from_limits(cls, limits: Any) -> AuthSettings:
        return cls(
            delay_after=limits.auth_delay_after, ip_block_after=limits.auth_lockout_after,
            network_block_after=limits.auth_network_lockout_after, block_time=limits.auth_lockout_time,
            failure_window=limits.auth_failure_window, hash_memory_kib=max(8, limits.auth_hash_memory // 1024),
            hash_time_cost=limits.auth_hash_time_cost, hash_parallelism=limits.auth_hash_parallelism,
            hash_workers=limits.auth_hash_workers, hash_queue=limits.auth_hash_queue,
            cache_ttl=limits.auth_cache_ttl)

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(time_cost=self.hash_time_cost, memory_cost=self.hash_memory_kib,
                              parallelism=self.hash_parallelism)


_MMAP_THRESHOLD_FIXED = False
M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number (malloc.h)


def fix_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Keep Argon2's working memory from staying resident after the checks.

    libargon2 (under argon2-cffi) mallocs its whole memory cost, 19 MiB, for every check.
    glibc serves a block that big with mmap and unmaps it on free, but each such free
    also raises glibc's *dynamic* mmap threshold to the block's size, after which the
    next 19 MiB blocks come from the hashing threads' heap arenas and stay resident when
    freed. Measured with bench/imap_stress.py (20 s, 10 clients): the serve process grew
    from 116 to 225 MiB and stayed there; with the threshold fixed, to 158 MiB. Setting
    M_MMAP_THRESHOLD pins it at glibc's default (128 KiB) and turns the dynamic rise off.
    A no-op where the C library has no mallopt (musl, macOS)."""
    global _MMAP_THRESHOLD_FIXED
    if _MMAP_THRESHOLD_FIXED:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _MMAP_THRESHOLD_FIXED = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    return _MMAP_THRESHOLD_FIXED


class HashPoolFull(Exception):
    """Every hash thread is busy and the queue is full: answer "try later" now."""


class HashPool:
    """A few threads for Argon2 only, with at most `queue` checks waiting for them.

    argon2-cffi releases the GIL while hashing, so the threads run in parallel with
    the event loop and the store's threads; their number bounds the memory
    (workers x memory cost) and the CPU that hashing can take.
    """

    def __init__(self, workers: int, queue: int) -> None:
        fix_mmap_threshold()
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="argon2")
        self._slots = threading.BoundedSemaphore(max(1, workers) + max(0, queue))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if not self._slots.acquire(blocking=False):
            raise HashPoolFull
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def source_keys(ip: str) -> tuple[str, str] | None:
    """("ip:<address>", "net:<network>") for a peer address: /24 for IPv4, /64 for
    IPv6, an IPv4-mapped IPv6 address counted as the IPv4 address it carries."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return f"ip:{address}", f"net:{network}"


def measure_hash(settings: AuthSettings | None = None, rounds: int = 3) -> float:
    """Seconds one Argon2 check takes here with these parameters (median of `rounds`)."""
    hasher = (settings or AuthSettings()).hasher()
    encoded = hasher.hash("measure-this-machine")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        hasher.verify(encoded, "measure-this-machine")
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@dataclass
class _Attempt:
    """What the first database read learnt, for the hash check and the final write."""

    address: str
    ip: str
    service: str
    stored_hash: str = ""
    exists: bool = False
    disabled: bool = False
    cache_key: bytes = b""
    cached: bool = False
    refusal: AuthResult | None = None
    failures: dict[str, int] = field(default_factory=dict)


class _AuthState:
    """Per-store state: settings, the hash pool, the success cache and its key."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.hasher = settings.hasher()
        self.dummy_hash = self.hasher.hash("not-a-real-password")  # verified for unknown users
        self.pool = HashPool(settings.hash_workers, settings.hash_queue)
        self.cache_secret = secrets.token_bytes(32)
        self.cache: dict[bytes, tuple[float, str]] = {}  # key -> (valid until, stored hash)
        self.lock = threading.Lock()


class AuthOps:
    _auth: _AuthState | None = None

    # --- set-up ------------------------------------------------------------------
    def configure_auth(self: Store, settings: AuthSettings) -> None:
        if self._auth is not None:
            self._auth.pool.close()
        self._auth = _AuthState(settings)

    @property
    def auth_state(self: Store) -> _AuthState:
        if self._auth is None:
            self._auth = _AuthState(AuthSettings(
                delay_after=self.auth_delay_after, ip_block_after=self.auth_lockout_after,
                block_time=self.auth_lockout_time, failure_window=self.auth_lockout_time))
        return self._auth

    def hash_password(self: Store, password: str) -> str:
        return self.auth_state.hasher.hash(password)

    # --- the check ---------------------------------------------------------------
    def authenticate(self: Store, address: str, password: str, *, ip: str = "",
                     service: str = "") -> AuthResult:
        """Blocking form, for callers on a thread (LDAP binds, tests). Async callers
        use `authenticate_async`, which holds no store thread during the hash."""
        attempt = self._auth_begin(address, password, ip, service)
        if attempt.refusal is not None:
            return attempt.refusal
        if attempt.cached:
            return self._auth_finish(attempt, True, None)
        try:
            verified, new_hash = self.auth_state.pool.submit(self._auth_verify, attempt, password).result()
        except HashPoolFull:
            return self._auth_busy(attempt)
        return self._auth_finish(attempt, verified, new_hash)

    async def authenticate_async(self: Store, address: str, password: str, *, ip: str = "",
                                 service: str = "") -> AuthResult:
        """Same as `authenticate`: the database parts on the store's threads, the hash
        on the hash pool, and nothing held while waiting for either."""
        attempt = await self.run(self._auth_begin, address, password, ip, service)
        if attempt.refusal is not None:
            return attempt.refusal
        if attempt.cached:
            return await self.run(self._auth_finish, attempt, True, None)
        try:
            future = self.auth_state.pool.submit(self._auth_verify, attempt, password)
        except HashPoolFull:
            return self._auth_busy(attempt)
        verified, new_hash = await asyncio.wrap_future(future)
        return await self.run(self._auth_finish, attempt, verified, new_hash)

    def _auth_begin(self: Store, address: str, password: str, ip: str, service: str) -> _Attempt:
        state = self.auth_state
        attempt = _Attempt((address or "").strip().lower(), ip, service)
        now = datetime.now(UTC)
        keys = source_keys(ip) if ip else None
        with self.db.read() as s:
            row = s.execute(select(Mailbox.password_hash, Mailbox.disabled)
                            .where(Mailbox.address == attempt.address)).first()
            entries = {e.key: e for e in s.execute(select(AuthFailure).where(
                AuthFailure.key.in_([f"user:{attempt.address}", *(keys or ())])))
                .scalars()}
        for key, entry in entries.items():
            if _expired(entry, now, state.settings):
                continue
            attempt.failures[key] = entry.failures
            if key != f"user:{attempt.address}" and entry.locked_until and _aware(entry.locked_until) > now:
                attempt.refusal = AuthResult(False, attempt.address, 0.0, True, "source blocked", True)
        if attempt.refusal is not None:
            with self.db.write() as s:
                audit.record(s, audit.LOGIN_FAILURE, actor=attempt.address, ip=ip,
                             details={"service": service, "reason": "source blocked"})
            return attempt
        if row is not None and row[0]:
            attempt.exists, attempt.stored_hash, attempt.disabled = True, row[0], bool(row[1])
        attempt.cache_key = hmac.new(state.cache_secret, attempt.address.encode() + b"\0"
                                     + password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        with state.lock:
            cached = state.cache.get(attempt.cache_key)
        attempt.cached = (cached is not None and cached[0] > time.monotonic() and attempt.exists
                          and cached[1] == attempt.stored_hash)
        return attempt

    def _auth_verify(self: Store, attempt: _Attempt, password: str) -> tuple[bool, str | None]:
        """On the hash pool: (password matches, new hash if the parameters changed)."""
        hasher = self.auth_state.hasher
        stored = attempt.stored_hash or self.auth_state.dummy_hash
        try:
            verified = hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, None
        if not attempt.exists:
            return False, None
        new_hash = hasher.hash(password) if hasher.check_needs_rehash(stored) else None
        return verified, new_hash

    def _auth_busy(self: Store, attempt: _Attempt) -> AuthResult:
        log.warning("authentication refused for now: hash pool full (service %s, peer %s)",
                    attempt.service or "-", attempt.ip or "-")
        return AuthResult(False, attempt.address, 0.0, False, "busy", True)

    def _auth_finish(self: Store, attempt: _Attempt, verified: bool, new_hash: str | None) -> AuthResult:
        state = self.auth_state
        settings = state.settings
        address, ip, service = attempt.address, attempt.ip, attempt.service
        user_key = f"user:{address}"
        if verified and attempt.exists and not attempt.disabled:
            with self.db.write() as s:
                if new_hash is not None:
                    mailbox = s.execute(select(Mailbox).where(Mailbox.address == address)).scalar_one()
                    if mailbox.password_hash == attempt.stored_hash:  # not changed meanwhile
                        mailbox.password_hash = new_hash
                existing = s.get(AuthFailure, user_key)
                if existing is not None:
                    s.delete(existing)
                audit.record(s, audit.LOGIN_SUCCESS, actor=address, ip=ip,
                             details={"service": service, **({"cached": True} if attempt.cached else {})})
            if not attempt.cached and new_hash is None and settings.cache_ttl > 0:
                with state.lock:
                    if len(state.cache) >= CACHE_SIZE:
                        state.cache.clear()
                    state.cache[attempt.cache_key] = (time.monotonic() + settings.cache_ttl, attempt.stored_hash)
            return AuthResult(True, address)
        reason = "disabled" if attempt.disabled and verified else "bad credentials"
        return self.record_auth_failure(address, ip, service, reason)

    def source_blocked(self: Store, ip: str) -> bool:
        """Whether a source (its address or network) is blocked now: the same refusal
        `authenticate` answers first, for a second factor checked after it (TOTP)."""
        keys = source_keys(ip) if ip else None
        if not keys:
            return False
        now = datetime.now(UTC)
        settings = self.auth_state.settings
        with self.db.read() as s:
            entries = s.execute(select(AuthFailure).where(AuthFailure.key.in_(keys))).scalars().all()
            return any(not _expired(e, now, settings) and e.locked_until is not None
                       and _aware(e.locked_until) > now for e in entries)

    def record_auth_failure(self: Store, address: str, ip: str, service: str, reason: str) -> AuthResult:
        """Count one failed authentication against the account and its source (address
        and network), block the source past its limit, audit it: the one place failures
        are counted, so a wrong password and a wrong TOTP code (reason "bad totp") feed
        the same counters and throttle IMAP, SMTP and the webmail alike."""
        settings = self.auth_state.settings
        now = datetime.now(UTC)
        user_key = f"user:{address}"
        keys = source_keys(ip) if ip else None
        counted: dict[str, int] = {}
        blocked = False
        with self.db.write() as s:
            for key in (user_key, *(keys or ())):
                entry = s.get(AuthFailure, key)
                if entry is None:
                    entry = AuthFailure(key=key, failures=0, last_failure=now)
                    s.add(entry)
                elif _expired(entry, now, settings):
                    entry.failures, entry.locked_until = 0, None
                entry.failures += 1
                entry.last_failure = now
                counted[key] = entry.failures
                limit = (settings.ip_block_after if key.startswith("ip:")
                         else settings.network_block_after if key.startswith("net:") else 0)
                if limit and entry.failures >= limit and not (entry.locked_until and _aware(entry.locked_until) > now):
                    entry.locked_until = now + timedelta(seconds=settings.block_time)
                    blocked = True
                    audit.record(s, audit.LOGIN_LOCKOUT, actor=address, ip=ip,
                                 details={"service": service, "source": key, "failures": entry.failures,
                                          "until_seconds": settings.block_time})
            audit.record(s, audit.LOGIN_FAILURE, actor=address, ip=ip,
                         details={"service": service, "reason": reason, "failures": counted.get(user_key, 0)})
        if blocked:
            # The operator's log line for the lockout itself (mssmail.logs; hardops).
            logs.event(logs.LOGIN_LOCKOUT, level=logging.WARNING, peer=ip, service=service, user=address,
                       reason=f"source blocked for {settings.block_time}s after repeated failures")
        return AuthResult(False, address, self._delay(max(counted.values(), default=0)), False, reason)

    def token_login(self: Store, user: str, identity: str, kind: str, *, ip: str = "", service: str = "",
                    mechanism: str = "") -> AuthResult:
        """A valid bearer token (mssmail/oidc.py) names `identity`: log in to the mailbox it
        designates, counted and audited as any login.

        `kind` "address": the identity is a mailbox address; "rpps": a national identifier
        (8 + RPPS, or the bare RPPS) that must own a personal (PER) mailbox. `user` is the box
        the client named ("" = the one box the identity designates). A token for someone
        else, a disabled or missing box, or an ambiguous identity is a failure in the same
        counters as a wrong password."""
        from mssmail.store.models import MailboxType

        wanted = (user or "").strip().lower()
        with self.db.read() as s:
            if kind == "rpps":
                rpps = national_rpps(identity)
                rows = [] if rpps is None else s.execute(
                    select(Mailbox.address, Mailbox.disabled).where(
                        Mailbox.owner.in_([rpps, "8" + rpps]),
                        Mailbox.type == MailboxType.personal.value)).all()
            else:
                rows = s.execute(select(Mailbox.address, Mailbox.disabled)
                                 .where(Mailbox.address == identity.strip().lower())).all()
        boxes = {address: disabled for address, disabled in rows}
        if wanted:
            address = wanted if wanted in boxes else ""
        else:
            address = next(iter(boxes)) if len(boxes) == 1 else ""
        if not address:
            reason = "token for another user" if boxes else "no mailbox for the token"
            if not wanted and len(boxes) > 1:
                reason = "token names several mailboxes"
            return self.record_auth_failure(wanted or identity[:320].lower(), ip, service, reason)
        if boxes[address]:
            return self.record_auth_failure(address, ip, service, "disabled")
        with self.db.write() as s:
            existing = s.get(AuthFailure, f"user:{address}")
            if existing is not None:
                s.delete(existing)
            audit.record(s, audit.LOGIN_SUCCESS, actor=address, ip=ip,
                         details={"service": service, "mechanism": mechanism or "bearer"})
        return AuthResult(True, address)

    def _delay(self: Store, failures: int) -> float:
        """Dovecot-like penalty: nothing for the first few failures, then doubling."""
        after = self.auth_state.settings.delay_after
        if failures < after:
            return 0.0
        return float(min(MAX_DELAY, 0.5 * 2 ** min(16, failures - after)))

    def forget_logins(self: Store) -> None:
        """Empty the success cache (tests, and after changing many passwords at once)."""
        with self.auth_state.lock:
            self.auth_state.cache.clear()

    def unlock(self: Store, address: str, actor: str = "admin") -> None:
        """Forget the failures counted against an account, or a source when `address` is
        an IP address (its address and network counters)."""
        keys = list(source_keys(address) or ()) or [f"user:{address.lower()}"]
        with self.db.write() as s:
            for key in keys:
                entry = s.get(AuthFailure, key)
                if entry is not None:
                    s.delete(entry)
            audit.record(s, audit.ADMIN, actor=actor, mailbox=address.lower(), details={"op": "unlock"})


def national_rpps(identity: str) -> str | None:
    """The RPPS in a national identifier: "8" + 11 digits (PSC's SubjectNameID, the
    "identification nationale PP") or the 11 digits alone; None for anything else (an
    ADELI, "0" + 9 characters, has no PER box of its own here)."""
    value = identity.strip()
    if len(value) == 12 and value.startswith("8"):
        value = value[1:]
    return value if len(value) == 11 and value.isdigit() else None


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _expired(entry: AuthFailure, now: datetime, settings: AuthSettings) -> bool:
    """A counter ends `failure_window` after its last failure, or when its block ends."""
    if entry.locked_until is not None:
        return _aware(entry.locked_until) <= now
    return _aware(entry.last_failure) + timedelta(seconds=settings.failure_window) <= now
