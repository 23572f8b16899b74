"""Append-only audit trail, each event chained to the previous one by SHA-256.

hash(n) = SHA-256(hash(n-1) || canonical JSON of event n). Editing a row changes its
hash; removing one breaks the next row's `prev_hash` (or the head's tip when it was
the last). Appends happen inside the caller's write transaction, so an event exists
if and only if the change it records was committed.

Anchoring. A plain hash chain only proves that nobody rewrote it *without re-hashing*:
whoever can write the database can edit an event and recompute every hash after it.
Two anchors kept outside the database close that:

- an HMAC key (`DATA/pki/audit.key`, mode 0600, made on first use): from the key's
  `from_seq` on, hash(n) = HMAC-SHA256(key, hash(n-1) || canonical JSON), so a chain
  recomputed without the key no longer verifies (events before `from_seq` predate the
  key: a database from an older version keeps its plain prefix);
- signed checkpoints: the chain head (seq, hash) signed with an Ed25519 key
  (`DATA/pki/audit-checkpoint.key`), written by `mss audit checkpoint` and by the server
  on a schedule (`[audit] checkpoint_interval`) into `DATA/audit/`, to be copied off the
  machine. A chain rewritten before a checkpoint's event, even with the HMAC key, no
  longer has that hash at that seq: `verify_checkpoint` says so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from mssmail.store.driversql import Driver, Processor, driver_for, process_columns
from mssmail.store.models import AuditEvent, AuditHead, Message, OutboundMessage

if TYPE_CHECKING:
    from mssmail.store.blobs import BlobStore

GENESIS = "0" * 64

# The actions the server records.
DELIVERY = "delivery"
READ = "read"
FLAGS = "flags"
DELETE = "delete"
EXPUNGE = "expunge"
APPEND = "append"
COPY = "copy"
MOVE = "move"
SEND = "send"
RELAY = "relay"
BOUNCE = "bounce"
LOGIN_SUCCESS = "login.success"
LOGIN_FAILURE = "login.failure"
LOGIN_LOCKOUT = "login.lockout"
ADMIN = "admin"
# A stored message whose bytes no longer match their digest was asked for and refused.
INTEGRITY_FAILURE = "integrity.failure"


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_string = json.encoder.encode_basestring  # what _ENCODER writes for a str (ensure_ascii=False)


def _canonical(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _canonical_event(seq: int, ts: str, event: Event, details: dict[str, Any]) -> bytes:
    """`_canonical` of an event's fields, written field by field (keys in sorted order):
    the same bytes, without building and sorting a dict per event of a large batch.
    tests/unit/store/test_audit_batch.py compares the two."""
    return (f'{{"action":{_string(event.action)},"actor":{_string(event.actor)},'
            f'"details":{_ENCODER.encode(details)},"ip":{_string(event.ip)},'
            f'"mailbox":{_string(event.mailbox)},"message":{_string(event.message)},'
            f'"seq":{seq},"ts":{_string(ts)}}}').encode()


def _event_fields(row: AuditEvent) -> dict[str, Any]:
    ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)
    return {
        "seq": row.seq,
        "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "action": row.action,
        "actor": row.actor,
        "mailbox": row.mailbox,
        "message": row.message_ref,
        "ip": row.remote_ip,
        "details": row.details or {},
    }


def chain_hash(prev_hash: str, fields: dict[str, Any], key: AuditKey | None = None) -> str:
    """The hash of an event: keyed (HMAC) from the key's `from_seq` on, plain before."""
    message = prev_hash.encode() + b"\n" + _canonical(fields)
    if key is not None and fields["seq"] >= key.from_seq:
        return key.mac(message)
    return hashlib.sha256(message).hexdigest()


@dataclass(frozen=True)
class AuditKey:
    """The chain's HMAC key, kept in a file outside the database (see the module doc)."""

    secret: bytes
    from_seq: int
    path: Path | None = None

    @property
    def key_id(self) -> str:
        """Names the key without revealing it (in checkpoints and `verify` output)."""
        return hashlib.sha256(b"mss-audit-key-id\n" + self.secret).hexdigest()[:16]

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


_KEY_HEADER = "mss-audit-key 1"
# The key of each database the process has open (a test may open several stores), by the
# engine's connection pool: an engine with execution options (the store's write engine)
# is another object sharing the same pool.
_KEYS: weakref.WeakKeyDictionary[Any, AuditKey] = weakref.WeakKeyDictionary()


def _parse_key(path: Path, text: str) -> AuditKey:
    fields = dict(line.split("=", 1) for line in text.splitlines()[1:] if "=" in line)
    if not text.startswith(_KEY_HEADER) or "key" not in fields or "from_seq" not in fields:
        raise ValueError(f"{path} is not an mss audit key file.")
    return AuditKey(bytes.fromhex(fields["key"].strip()), int(fields["from_seq"]), path)


def load_or_create_key(path: Path, engine: Engine) -> AuditKey:
    """The audit key at `path`, made (0600) if absent, and attached to `engine` so that
    every event appended through it is keyed. A new key applies from the event after the
    current tip: the events already there keep their plain hashes."""
    try:
        key = _parse_key(path, path.read_text(encoding="ascii"))
    except FileNotFoundError:
        from_seq = 1
        try:
            with engine.connect() as connection:
                tip = connection.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar()
            from_seq = (tip or 0) + 1
        except Exception:  # no audit table yet (before the first migration): from event 1
            from_seq = 1
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f"{_KEY_HEADER}\nfrom_seq={from_seq}\nkey={secrets.token_hex(32)}\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            key = _parse_key(path, path.read_text(encoding="ascii"))
        else:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            key = _parse_key(path, text)
    _KEYS[engine.pool] = key
    return key


def key_of(bind: Session | Connection | Engine) -> AuditKey | None:
    if isinstance(bind, Session):
        bind = bind.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    return _KEYS.get(engine.pool)


@dataclass(frozen=True)
class Event:
    """One event to append; `record_many` chains a list of them in one go."""

    action: str
    actor: str = ""
    mailbox: str = ""
    message: str = ""
    ip: str = ""
    details: dict[str, Any] | None = None


_HEAD = cast(Table, AuditHead.__table__)
# Built once: this runs in every write transaction that records something.
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_INSERT_EVENTS = insert(cast(Table, AuditEvent.__table__))
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))


def record(
    session: Session | Connection,
    action: str,
    *,
    actor: str = "",
    mailbox: str = "",
    message: str = "",
    ip: str = "",
    details: dict[str, Any] | None = None,
) -> tuple[int, str]:
    """Append one event within the caller's (write) transaction; (seq, hash)."""
    return record_many(session, [Event(action, actor, mailbox, message, ip, details)])


def record_many(session: Session | Connection, events: list[Event]) -> tuple[int, str]:
    """Append events in order within the caller's write transaction; the new (seq, hash) tip.

    One head read, one insert and one head update whatever the number of events: a
    FETCH of a thousand bodies or a group commit of deliveries costs three statements,
    not three per message. Where the dialect allows, they run as pre-built SQL on the
    DBAPI cursor (see `mssmail.store.driversql`): this runs in every delivery commit.
    """
    connection = session.connection() if isinstance(session, Session) else session
    driver = driver_for(connection)
    if isinstance(session, Session) or driver is None:
        # Through the session: its pending changes are flushed before the head is locked.
        head = session.execute(_LOCK_HEAD).first()
    else:
        head = driver.execute(connection, f"SELECT seq, hash FROM {_HEAD.name} WHERE id = 1{driver.for_update}"
                              ).fetchone()
    if head is None:
        session.execute(insert(_HEAD).values(id=1, seq=0, hash=GENESIS))
        seq, prev_hash = 0, GENESIS
    else:
        seq, prev_hash = head
    if not events:
        return seq, prev_hash
    # One moment for the batch: its events are committed together. Microsecond
    # precision survives both SQLite and PostgreSQL round trips.
    now = datetime.now(UTC)
    key = _KEYS.get(connection.engine.pool)
    if driver is None:
        seq, rows = _chain(seq, prev_hash, events, now, now, key)
        tip = rows[-1][-1]
        session.execute(_INSERT_EVENTS, [dict(zip(_EVENT_COLUMNS, row, strict=True)) for row in rows])
        session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": tip})
        return seq, tip
    processors = driver.processors(AuditEvent.__table__, _EVENT_COLUMNS)  # type: ignore[arg-type]
    ts_proc = processors[_TS]
    seq, rows = _chain(seq, prev_hash, events, now, now if ts_proc is None else ts_proc(now), key)
    tip = rows[-1][-1]
    _insert_rows(driver, connection, rows, processors)
    driver.execute(connection, f"UPDATE {_HEAD.name} SET seq = {driver.mark}, hash = {driver.mark} WHERE id = 1",
                   (seq, tip))
    return seq, tip


_EVENT_COLUMNS = ("seq", "ts", "action", "actor", "mailbox", "message_ref", "remote_ip", "details",
                  "prev_hash", "hash")
_TS = _EVENT_COLUMNS.index("ts")


def _chain(seq: int, prev_hash: str, events: list[Event], now: datetime, ts_value: Any,
           key: AuditKey | None = None) -> tuple[int, list[tuple[Any, ...]]]:
    """The rows of `events` chained after (seq, prev_hash), values in `_EVENT_COLUMNS`
    order with `ts_value` (`now`, perhaps already bind-processed) as their time; the
    last seq."""
    rows: list[tuple[Any, ...]] = []
    sha256 = hashlib.sha256
    stamp = now.isoformat(timespec="microseconds")
    keyed = None if key is None else hmac.new(key.secret, digestmod=hashlib.sha256)
    from_seq = key.from_seq if key is not None else 0
    for event in events:
        seq += 1
        details = event.details or {}
        # = chain_hash(prev_hash, fields of the event, key), as `verify` recomputes it
        message = prev_hash.encode() + b"\n" + _canonical_event(seq, stamp, event, details)
        if keyed is not None and seq >= from_seq:
            mac = keyed.copy()
            mac.update(message)
            digest = mac.hexdigest()
        else:
            digest = sha256(message).hexdigest()
        rows.append((seq, ts_value, event.action, event.actor, event.mailbox, event.message, event.ip, details,
                     prev_hash, digest))
        prev_hash = digest
    return seq, rows


def _insert_rows(driver: Driver, connection: Connection, rows: list[tuple[Any, ...]],
                 processors: list[Processor]) -> None:
    """INSERT the events as one driver executemany, values through the columns' own bind
    processors (the values Core would store; `ts`, shared by the batch, is processed
    already), without Core's per-row parameter handling."""
    table = cast(Table, AuditEvent.__table__)
    sql = (f"INSERT INTO {table.name} ({', '.join(_EVENT_COLUMNS)}) "
           f"VALUES ({driver.marks(len(_EVENT_COLUMNS))})")
    processors = [None if index == _TS else proc for index, proc in enumerate(processors)]
    driver.execute_many(connection, sql, process_columns(rows, processors))


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""


def verify(session: Session, batch: int = 5000, key: AuditKey | None = None) -> VerifyResult:
    """Walk the chain in order; report the first event that does not fit. With the
    database's audit key (by default the one attached to its engine), events from the
    key's `from_seq` on must carry its HMAC: a chain re-hashed without it fails."""
    key = key or key_of(session)
    prev_hash = GENESIS
    expected_seq = 1
    checked = 0
    last_id = 0
    while True:
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
        ).scalars().all()
        if not rows:
            break
        for row in rows:
            if row.seq != expected_seq:
                return VerifyResult(False, checked, expected_seq,
                                    f"event {expected_seq} is missing (next found is {row.seq})")
            if row.prev_hash != prev_hash:
                return VerifyResult(False, checked, row.seq,
                                    f"event {row.seq} does not follow event {row.seq - 1} (previous hash differs)")
            if chain_hash(prev_hash, _event_fields(row), key) != row.hash:
                return VerifyResult(False, checked, row.seq, f"event {row.seq} was modified (hash mismatch)")
            prev_hash = row.hash
            expected_seq += 1
            checked += 1
            last_id = row.id
        session.expunge_all()
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != checked or head.hash != prev_hash):
        return VerifyResult(False, checked, checked + 1 if head.seq > checked else head.seq,
                            f"the chain ends at event {checked} but its recorded tip is event {head.seq}")
    return VerifyResult(True, checked)


def iter_events(session: Session, since_seq: int = 0, batch: int = 5000) -> Iterator[dict[str, Any]]:
    last = since_seq
    while True:
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).scalars().all()
        if not rows:
            return
        for row in rows:
            yield {**_event_fields(row), "prev_hash": row.prev_hash, "hash": row.hash}
            last = row.seq
        session.expunge_all()


def export_jsonl(session: Session, out: TextIO, since_seq: int = 0) -> int:
    count = 0
    for event in iter_events(session, since_seq):
        out.write(json.dumps(event, ensure_ascii=False) + "\n")
        count += 1
    return count


# --- checkpoints ---------------------------------------------------------------------

CHECKPOINT_FORMAT = "mss-audit-checkpoint/1"


def _checkpoint_key(pki: Path) -> Any:
    """The Ed25519 key that signs checkpoints (`pki/audit-checkpoint.key`, made 0600 on
    first use; its public half beside it as `.pub`, for verifying elsewhere)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = pki / "audit-checkpoint.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key.")
        return key
    key = Ed25519PrivateKey.generate()
    pki.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    (pki / "audit-checkpoint.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def _checkpoint_payload(body: dict[str, Any]) -> bytes:
    return _canonical({k: body[k] for k in ("format", "seq", "hash", "ts", "key_id")})


def head(session: Session) -> tuple[int, str]:
    """The chain's tip (seq, hash)."""
    row = session.get(AuditHead, 1)
    return (row.seq, row.hash) if row else (0, GENESIS)


def make_checkpoint(session: Session, pki: Path) -> dict[str, Any]:
    """The chain's current head, signed: a JSON object to keep away from the database."""
    from cryptography.hazmat.primitives import serialization

    head = session.get(AuditHead, 1)
    audit_key = key_of(session)
    body: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "seq": head.seq if head else 0,
        "hash": head.hash if head else GENESIS,
        "ts": datetime.now(UTC).isoformat(timespec="seconds"),
        "key_id": audit_key.key_id if audit_key else "",
    }
    signer = _checkpoint_key(pki)
    body["signature"] = base64.b64encode(signer.sign(_checkpoint_payload(body))).decode()
    body["public_key"] = signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return body


def write_checkpoint(session: Session, pki: Path, directory: Path) -> Path:
    """`make_checkpoint` into `directory/checkpoint-<seq>.json` (0600, written whole)."""
    body = make_checkpoint(session, pki)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{body['seq']:012d}.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(body, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def verify_checkpoint(session: Session, checkpoint: dict[str, Any], pki: Path,
                      public_key_pem: bytes | None = None) -> str | None:
    """Why the chain in the database does not match a checkpoint, or None when it does.

    The signature is checked with our own checkpoint key (or `public_key_pem`), never
    with the key the file carries: a forged file would carry its forger's key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        return "the file is not an mss audit checkpoint"
    if public_key_pem is not None:
        public = serialization.load_pem_public_key(public_key_pem)
    elif (pki / "audit-checkpoint.key").exists():
        public = _checkpoint_key(pki).public_key()
    elif (pki / "audit-checkpoint.pub").exists():
        public = serialization.load_pem_public_key((pki / "audit-checkpoint.pub").read_bytes())
    else:
        return "no checkpoint key to check the signature with"
    if not isinstance(public, Ed25519PublicKey):
        return "the checkpoint key is not an Ed25519 key"
    try:
        public.verify(base64.b64decode(checkpoint.get("signature", "")), _checkpoint_payload(checkpoint))
    except (InvalidSignature, KeyError, ValueError):
        return "the checkpoint's signature is not valid"
    seq, expected = int(checkpoint["seq"]), checkpoint["hash"]
    if seq == 0:
        return None
    found = session.execute(select(AuditEvent.hash).where(AuditEvent.seq == seq)).scalar()
    if found is None:
        return f"event {seq} of the checkpoint is no longer in the chain"
    if found != expected:
        return (f"event {seq} does not have the hash the checkpoint of {checkpoint.get('ts')} recorded: "
                "the chain was rewritten")
    return None


# --- blobs ---------------------------------------------------------------------------

@dataclass
class BlobReport:
    checked: int
    problems: list[tuple[str, str]]  # (digest, "missing" | "damaged")


def verify_blobs(session: Session, blobs: BlobStore) -> BlobReport:
    """Check every blob a message or a queued relay names: present, and its bytes hash to
    its name. `mss audit verify --blobs` and `mss check` report what this finds."""
    digests: set[str] = set()
    for model in (Message, OutboundMessage):
        digests.update(session.execute(select(func.distinct(model.blob_sha256))).scalars())
    problems = [(sha, why) for sha in sorted(digests) if (why := blobs.check(sha))]
    return BlobReport(len(digests), problems)
