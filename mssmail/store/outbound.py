"""Outbound relay queue in the database: enqueue, claim with a lease, record attempts.

A claimed item carries a lease: if the process dies mid-delivery, the item becomes due
again when the lease runs out. On PostgreSQL concurrent workers claim with
`SELECT ... FOR UPDATE SKIP LOCKED`; on SQLite the write transaction (BEGIN IMMEDIATE)
already serialises claimers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from mssmail import audit
from mssmail.store.errors import StoreError
from mssmail.store.models import OutboundMessage

if TYPE_CHECKING:
    from mssmail.store.service import Store

QUEUED, SENDING, DONE, FAILED = "queued", "sending", "done", "failed"
ACTIVE = (QUEUED, SENDING)


class QueueItemNotFound(StoreError):
    pass


@dataclass(frozen=True)
class RecipientResult:
    """Outcome of one attempt for one recipient: 'sent', 'failed' (permanent) or 'deferred'."""

    status: str
    code: int = 0
    text: str = ""
    remote: str = ""


def _as_dict(row: OutboundMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "sender": row.sender,
        "recipients": [dict(r) for r in row.recipients],
        "blob_sha256": row.blob_sha256,
        "size": row.size,
        "envelope_id": row.envelope_id,
        "created_at": row.created_at,
        "next_attempt": row.next_attempt,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "state": row.state,
        "delay_warned": row.delay_warned,
    }


class OutboundOps:
    def enqueue_outbound(self: Store, sender: str, recipients: Sequence[str], raw: bytes,
                         envelope_id: str = "", *, actor: str = "", ip: str = "") -> int:
        """Durable before it returns (blob fsynced, then row and audit event committed)."""
        targets = list(dict.fromkeys(r.strip() for r in recipients if r.strip()))
        if not targets:
            raise ValueError("a queued message needs at least one recipient.")
        sha = self.blobs.put(raw)
        now = datetime.now(UTC)
        with self.db.write() as s:
            row = OutboundMessage(
                sender=sender, recipients=[{"address": r, "status": QUEUED, "error": ""} for r in targets],
                blob_sha256=sha, size=len(raw), envelope_id=envelope_id[:100], created_at=now,
                next_attempt=now, attempts=0, last_error="", state=QUEUED, delay_warned=False,
            )
            s.add(row)
            s.flush()
            audit.record(s, audit.RELAY, actor=actor or sender, ip=ip, message=f"queue/{row.id}",
                         details={"event": "queued", "sender": sender, "recipients": targets,
                                  "size": len(raw), "sha256": sha})
            return row.id

    def claim_outbound(self: Store, limit: int, lease_seconds: int,
                       now: datetime | None = None) -> list[dict[str, Any]]:
        """Take up to `limit` due items, leasing them for `lease_seconds`."""
        if limit <= 0:
            return []
        now = now or datetime.now(UTC)
        due = or_(
            and_(OutboundMessage.state == QUEUED, OutboundMessage.next_attempt <= now),
            # A lease that ran out: the worker that held it died.
            and_(OutboundMessage.state == SENDING, OutboundMessage.lease_until < now),
        )
        with self.db.write() as s:
            rows = s.execute(
                select(OutboundMessage).where(due).order_by(OutboundMessage.next_attempt)
                .limit(limit).with_for_update(skip_locked=True)
            ).scalars().all()
            for row in rows:
                row.state = SENDING
                row.lease_until = now + timedelta(seconds=lease_seconds)
            return [_as_dict(r) for r in rows]

    def record_attempt(self: Store, item_id: int, results: Mapping[str, RecipientResult], *,
                       next_attempt: datetime, last_error: str = "",
                       delay_warned: bool | None = None) -> dict[str, Any]:
        """Store one attempt's per-recipient outcomes; the item ends when none is pending."""
        with self.db.write() as s:
            row = s.execute(select(OutboundMessage).where(OutboundMessage.id == item_id)
                            .with_for_update()).scalar_one_or_none()
            if row is None:
                raise QueueItemNotFound(f"no queued message {item_id}.")
            recipients = [dict(r) for r in row.recipients]
            for entry in recipients:
                result = results.get(entry["address"])
                if result is None or entry["status"] != QUEUED:
                    continue
                entry["error"] = f"{result.code} {result.text}".strip() if result.code else result.text
                if result.status == "sent":
                    entry["status"] = "sent"
                    audit.record(s, audit.RELAY, actor="relay", message=f"queue/{row.id}",
                                 details={"event": "sent", "sender": row.sender,
                                          "recipient": entry["address"], "remote": result.remote,
                                          "reply": entry["error"]})
                elif result.status == "failed":
                    entry["status"] = "failed"
                    audit.record(s, audit.BOUNCE, actor="relay", message=f"queue/{row.id}",
                                 details={"event": "failed", "sender": row.sender,
                                          "recipient": entry["address"], "remote": result.remote,
                                          "reply": entry["error"]})
            row.recipients = recipients
            row.attempts += 1
            row.last_error = last_error[:2000]
            row.lease_until = None
            if delay_warned is not None:
                row.delay_warned = delay_warned
            pending = [e for e in recipients if e["status"] == QUEUED]
            if pending:
                row.state = QUEUED
                row.next_attempt = next_attempt
            else:
                row.state = FAILED if any(e["status"] == "failed" for e in recipients) else DONE
            return _as_dict(row)

    def list_outbound(self: Store, include_finished: bool = False) -> list[dict[str, Any]]:
        with self.db.read() as s:
            query = select(OutboundMessage).order_by(OutboundMessage.id)
            if not include_finished:
                query = query.where(OutboundMessage.state.in_(ACTIVE))
            return [_as_dict(r) for r in s.execute(query).scalars().all()]

    def outbound_of_sent(self: Store, actor: Any, address: str,
                         digests: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """"Suivi des envois": the relay queue's items that `address` sent, by the digest
        of their bytes. `submit()` queues the very bytes it files in Sent, so a Sent
        message's digest finds its remote recipients' states here (queued, sent, failed
        with the remote reply). The actor must be able to open `address` (owner or
        delegate); other senders' items are never returned. Metadata: not audited. One
        indexed query (`blob_sha256`), at most 500 digests."""
        wanted = sorted({d for d in digests if d})[:500]
        with self.db.read() as s:
            _mailbox_id, address, _rights = self._access(s, actor, address)
            if not wanted:
                return {}
            rows = s.execute(select(OutboundMessage).where(OutboundMessage.blob_sha256.in_(wanted),
                                                           OutboundMessage.sender == address)
                             .order_by(OutboundMessage.id)).scalars().all()
            found: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                found.setdefault(row.blob_sha256, []).append(_as_dict(row))
            return found

    def get_outbound(self: Store, item_id: int) -> dict[str, Any]:
        with self.db.read() as s:
            row = s.get(OutboundMessage, item_id)
            if row is None:
                raise QueueItemNotFound(f"no queued message {item_id}.")
            return _as_dict(row)

    def retry_outbound(self: Store, item_id: int | None = None, *, actor: str = "admin") -> int:
        """Make one waiting item (or all with None) due now; how many were."""
        now = datetime.now(UTC)
        with self.db.write() as s:
            query = select(OutboundMessage).where(OutboundMessage.state == QUEUED)
            if item_id is not None:
                query = query.where(OutboundMessage.id == item_id)
            rows = s.execute(query.with_for_update()).scalars().all()
            if item_id is not None and not rows:
                raise QueueItemNotFound(f"no waiting message {item_id} in the queue.")
            for row in rows:
                row.next_attempt = now
            audit.record(s, audit.ADMIN, actor=actor, message="queue/" + ("all" if item_id is None else str(item_id)),
                         details={"event": "queue.retry", "ids": [r.id for r in rows]})
            return len(rows)

    def remove_outbound(self: Store, item_id: int, *, actor: str = "admin") -> None:
        """Drop an item without delivering it (its blob may be shared, so it stays)."""
        with self.db.write() as s:
            row = s.execute(select(OutboundMessage).where(OutboundMessage.id == item_id)
                            .with_for_update()).scalar_one_or_none()
            if row is None:
                raise QueueItemNotFound(f"no queued message {item_id}.")
            audit.record(s, audit.ADMIN, actor=actor, message=f"queue/{item_id}",
                         details={"event": "queue.remove", "sender": row.sender,
                                  "recipients": [e["address"] for e in row.recipients
                                                 if e["status"] == QUEUED]})
            s.delete(row)
