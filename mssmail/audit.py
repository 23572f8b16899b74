"""Append-only audit trail, each event chained to the previous one by SHA-256.

hash(n) = SHA-256(hash(n-1) || canonical JSON of event n). Editing a row changes its
hash; removing one breaks the next row's `prev_hash` (or the head's tip when it was
the last). Appends happen inside the caller's write transaction, so an event exists
if and only if the change it records was committed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from mssmail.store.models import AuditEvent, AuditHead

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


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(fields)).hexdigest()


@dataclass(frozen=True)
class Event:
    """One event to append; `record_many` chains a list of them in one go."""

    action: str
    actor: str = ""
    mailbox: str = ""
    message: str = ""
    ip: str = ""
    details: dict[str, Any] | None = None


_HEAD = AuditHead.__table__
# Built once: this runs in every write transaction that records something.
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_INSERT_EVENTS = insert(AuditEvent.__table__)
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

    One head read, one multi-row insert and one head update whatever the number of
    events: a FETCH of a thousand bodies or a group commit of deliveries costs three
    statements, not three per message. Core statements, not ORM objects.
    """
    head = session.execute(_LOCK_HEAD).first()
    if head is None:
        session.execute(insert(_HEAD).values(id=1, seq=0, hash=GENESIS))
        seq, prev_hash = 0, GENESIS
    else:
        seq, prev_hash = head
    if not events:
        return seq, prev_hash
    rows: list[dict[str, Any]] = []
    sha256 = hashlib.sha256
    # One moment for the batch: its events are committed together. Microsecond
    # precision survives both SQLite and PostgreSQL round trips.
    now = datetime.now(UTC)
    stamp = now.isoformat(timespec="microseconds")
    for event in events:
        seq += 1
        details = event.details or {}
        # = chain_hash(prev_hash, fields of the event), as `verify` recomputes it
        digest = sha256(prev_hash.encode() + b"\n" + _canonical_event(seq, stamp, event, details)).hexdigest()
        rows.append({
            "seq": seq, "ts": now, "action": event.action, "actor": event.actor,
            "mailbox": event.mailbox, "message_ref": event.message, "remote_ip": event.ip,
            "details": details, "prev_hash": prev_hash, "hash": digest,
        })
        prev_hash = digest
    _insert_rows(session, rows)
    session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev_hash})
    return seq, prev_hash


_EVENT_COLUMNS = ("seq", "ts", "action", "actor", "mailbox", "message_ref", "remote_ip", "details",
                  "prev_hash", "hash")
_driver_inserts: dict[Any, tuple[str, list[Any]]] = {}


def _insert_rows(session: Session | Connection, rows: list[dict[str, Any]]) -> None:
    """INSERT the events: few rows as a Core statement, many as one driver executemany
    whose values went through the columns' own bind processors (the same stored values),
    without SQLAlchemy's per-row parameter handling (half the cost of a batch of reads)."""
    if len(rows) < 8:
        session.execute(_INSERT_EVENTS, rows)
        return
    connection = session.connection() if isinstance(session, Session) else session
    dialect = connection.dialect
    prepared = _driver_inserts.get(dialect)
    if prepared is None:
        table = AuditEvent.__table__
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        if dialect.paramstyle not in ("qmark", "format", "pyformat"):
            session.execute(_INSERT_EVENTS, rows)
            return
        sql = (f"INSERT INTO {table.name} ({', '.join(_EVENT_COLUMNS)}) "
               f"VALUES ({', '.join([mark] * len(_EVENT_COLUMNS))})")
        processors = [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in _EVENT_COLUMNS]
        prepared = _driver_inserts.setdefault(dialect, (sql, processors))
    sql, processors = prepared
    columns = []
    for name, proc in zip(_EVENT_COLUMNS, processors, strict=True):
        values = [row[name] for row in rows]
        if proc is not None:
            if name == "ts" and all(value is values[0] for value in values):
                values = [proc(values[0])] * len(values)  # a batch shares its moment
            else:
                values = [proc(value) for value in values]
        columns.append(values)
    connection.exec_driver_sql(sql, list(zip(*columns, strict=True)))


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain in order; report the first event that does not fit."""
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
            if chain_hash(prev_hash, _event_fields(row)) != row.hash:
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
