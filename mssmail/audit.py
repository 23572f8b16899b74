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

from mssmail.store.driversql import Driver, Processor, driver_for, process_columns
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
    if driver is None:
        seq, rows = _chain(seq, prev_hash, events, now, now)
        tip = rows[-1][-1]
        session.execute(_INSERT_EVENTS, [dict(zip(_EVENT_COLUMNS, row, strict=True)) for row in rows])
        session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": tip})
        return seq, tip
    processors = driver.processors(AuditEvent.__table__, _EVENT_COLUMNS)  # type: ignore[arg-type]
    ts_proc = processors[_TS]
    seq, rows = _chain(seq, prev_hash, events, now, now if ts_proc is None else ts_proc(now))
    tip = rows[-1][-1]
    _insert_rows(driver, connection, rows, processors)
    driver.execute(connection, f"UPDATE {_HEAD.name} SET seq = {driver.mark}, hash = {driver.mark} WHERE id = 1",
                   (seq, tip))
    return seq, tip


_EVENT_COLUMNS = ("seq", "ts", "action", "actor", "mailbox", "message_ref", "remote_ip", "details",
                  "prev_hash", "hash")
_TS = _EVENT_COLUMNS.index("ts")


def _chain(seq: int, prev_hash: str, events: list[Event], now: datetime, ts_value: Any
           ) -> tuple[int, list[tuple[Any, ...]]]:
    """The rows of `events` chained after (seq, prev_hash), values in `_EVENT_COLUMNS`
    order with `ts_value` (`now`, perhaps already bind-processed) as their time; the
    last seq."""
    rows: list[tuple[Any, ...]] = []
    sha256 = hashlib.sha256
    stamp = now.isoformat(timespec="microseconds")
    for event in events:
        seq += 1
        details = event.details or {}
        # = chain_hash(prev_hash, fields of the event), as `verify` recomputes it
        digest = sha256(prev_hash.encode() + b"\n" + _canonical_event(seq, stamp, event, details)).hexdigest()
        rows.append((seq, ts_value, event.action, event.actor, event.mailbox, event.message, event.ip, details,
                     prev_hash, digest))
        prev_hash = digest
    return seq, rows


def _insert_rows(driver: Driver, connection: Connection, rows: list[tuple[Any, ...]],
                 processors: list[Processor]) -> None:
    """INSERT the events as one driver executemany, values through the columns' own bind
    processors (the values Core would store; `ts`, shared by the batch, is processed
    already), without Core's per-row parameter handling."""
    table = AuditEvent.__table__
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
