"""Putting messages into mailboxes: SMTP delivery, IMAP APPEND, copies to Sent.

Order of durability (DESIGN rule 2): blob written and fsynced, then the rows and the
audit event committed in one transaction (fsynced by the database), then callers may
acknowledge. A crash between the two leaves an unreferenced blob, never a row
without its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from mssmail import audit
from mssmail.store.errors import FolderNotFound, MailboxNotFound, QuotaExceeded
from mssmail.store.events import FolderChanged
from mssmail.store.groupcommit import BatchWork
from mssmail.store.models import Folder, Mailbox, Message
from mssmail.store.summary import Summary, summarize

if TYPE_CHECKING:
    from mssmail.store.service import Store


@dataclass(frozen=True)
class DeliveryOutcome:
    address: str
    ok: bool
    uid: int = 0
    uidvalidity: int = 0
    message_id: int = 0
    # SMTP reply for a refused recipient, e.g. (552, "5.2.2 Mailbox full").
    code: int = 250
    reason: str = ""


def _flag_columns(flags: str) -> tuple[bool, bool]:
    words = set(flags.split())
    return "\\Seen" in words, "\\Deleted" in words


@dataclass(frozen=True)
class DeliveryRequest:
    """One message for one or more local recipients, its blob already durable."""

    summary: Summary
    sha: str
    size: int
    targets: tuple[str, ...]
    folder: str
    flags: str
    seen: bool
    deleted: bool
    when: datetime
    action: str
    actor: str
    sender: str
    ip: str
    extra: dict[str, Any]


DeliveryResult = tuple[dict[str, DeliveryOutcome], list[FolderChanged]]


_mailboxes, _folders, _messages = Mailbox.__table__, Folder.__table__, Message.__table__
# Built once: constructing a statement costs more than running it on this path.
_LOCK_MAILBOXES = (
    select(_mailboxes.c.id, _mailboxes.c.address, _mailboxes.c.disabled, _mailboxes.c.used_bytes,
           _mailboxes.c.quota_bytes)
    .where(_mailboxes.c.address.in_(bindparam("addresses", expanding=True)))
    .order_by(_mailboxes.c.id).with_for_update()
)
_LOCK_FOLDERS = (
    select(_folders.c.id, _folders.c.mailbox_id, _folders.c.name, _folders.c.uidvalidity,
           _folders.c.uidnext, _folders.c.highest_modseq)
    .where(_folders.c.mailbox_id.in_(bindparam("mailbox_ids", expanding=True)),
           _folders.c.name.in_(bindparam("names", expanding=True)))
    .order_by(_folders.c.id).with_for_update()
)
_INSERT_MESSAGES = insert(_messages).returning(_messages.c.id, sort_by_parameter_order=True)
_ADVANCE_FOLDERS = update(_folders).where(_folders.c.id == bindparam("fid")).values(
    uidnext=bindparam("next_uid"), highest_modseq=bindparam("modseq"),
    message_count=_folders.c.message_count + bindparam("added"),
    unseen_count=_folders.c.unseen_count + bindparam("unseen"))
_SET_USED_BYTES = update(_mailboxes).where(_mailboxes.c.id == bindparam("bid")).values(
    used_bytes=bindparam("new_used"))


def deliver_batch(s: Connection, requests: Sequence[DeliveryRequest]) -> list[DeliveryResult | BaseException]:
    """Deliver many messages with a fixed number of statements, whatever their number.

    Mailboxes and folders are read (and locked) once for the whole batch, UIDs and
    quotas are worked out in Python in request order, then the rows go in as
    multi-row statements and the audit events as one chained batch. A request whose
    folder does not exist fails alone, before anything is written. This is the hot
    path of every delivery: under load the group committer hands it dozens of
    messages per transaction.
    """
    addresses = sorted({a for r in requests for a in r.targets})
    boxes = {row.address: row for row in s.execute(_LOCK_MAILBOXES, {"addresses": addresses})} if addresses else {}
    used = {row.id: row.used_bytes for row in boxes.values()}
    names = sorted({r.folder for r in requests})
    folder_rows = {(row.mailbox_id, row.name): row for row in s.execute(
        _LOCK_FOLDERS, {"mailbox_ids": sorted(used), "names": names})} if used else {}
    # Running state per folder: [uidnext, highest_modseq, added, unseen added].
    state = {row.id: [row.uidnext, row.highest_modseq, 0, 0] for row in folder_rows.values()}

    results: list[DeliveryResult | BaseException] = []
    message_rows: list[dict[str, Any]] = []
    events: list[audit.Event] = []
    pending: list[tuple[dict[str, DeliveryOutcome], str, int, int]] = []
    for request in requests:
        missing = next((a for a in request.targets if a in boxes
                        and (boxes[a].id, request.folder) not in folder_rows), None)
        if missing is not None:
            results.append(FolderNotFound(f"no folder {request.folder!r} in {missing}."))
            continue
        outcomes: dict[str, DeliveryOutcome] = {}
        changed: list[FolderChanged] = []
        for address in request.targets:
            box = boxes.get(address)
            if box is None:
                outcomes[address] = DeliveryOutcome(address, False, code=550, reason="5.1.1 No such mailbox here")
                continue
            if box.disabled:
                outcomes[address] = DeliveryOutcome(address, False, code=550, reason="5.2.1 Mailbox disabled")
                continue
            if used[box.id] + request.size > box.quota_bytes:
                outcomes[address] = DeliveryOutcome(address, False, code=552, reason="5.2.2 Mailbox full")
                continue
            used[box.id] += request.size
            target = folder_rows[(box.id, request.folder)]
            running = state[target.id]
            uid, modseq = running[0], running[1] + 1
            running[0], running[1] = uid + 1, modseq
            running[2] += 1
            running[3] += 0 if request.seen else 1
            message_rows.append({
                "folder_id": target.id, "uid": uid, "blob_sha256": request.sha, "size": request.size,
                "internal_date": request.when, "flags": request.flags, "seen": request.seen,
                "deleted": request.deleted, "modseq": modseq, "from_addr": request.summary.from_addr,
                "to_addrs": request.summary.to_addrs, "subject": request.summary.subject,
                "date_header": request.summary.date, "message_id": request.summary.message_id,
                "has_attachments": request.summary.has_attachments, "extra": request.extra,
            })
            events.append(audit.Event(
                request.action, actor=request.actor, mailbox=address, ip=request.ip,
                message=f"{target.name}/{target.uidvalidity}/{uid}",
                details={"sender": request.sender, "size": request.size, "sha256": request.sha,
                         "message_id": request.summary.message_id}))
            pending.append((outcomes, address, uid, target.uidvalidity))
            changed.append(FolderChanged(box.id, target.id, "new"))
        results.append((outcomes, changed))

    if message_rows:
        ids = s.execute(_INSERT_MESSAGES, message_rows).scalars().all()
        for (outcomes, address, uid, uidvalidity), message_id in zip(pending, ids, strict=True):
            outcomes[address] = DeliveryOutcome(address, True, uid, uidvalidity, message_id)
        s.execute(_ADVANCE_FOLDERS, [{"fid": fid, "next_uid": v[0], "modseq": v[1], "added": v[2], "unseen": v[3]}
                                     for fid, v in state.items() if v[2]])
        s.execute(_SET_USED_BYTES, [{"bid": row.id, "new_used": used[row.id]} for row in boxes.values()
                                    if used[row.id] != row.used_bytes])
        audit.record_many(s, events)
    # Outcomes were filled in place; keep each request's recipients in its own order.
    for result in results:
        if isinstance(result, tuple):
            outcomes = result[0]
            ordered = {a: outcomes[a] for a in sorted(outcomes)}
            outcomes.clear()
            outcomes.update(ordered)
    return results


class DeliveryOps:
    def _lock_folder(self: Store, s: Session, mailbox: Mailbox, folder_name: str) -> Folder:
        query = select(Folder).where(Folder.mailbox_id == mailbox.id)
        if folder_name.upper() == "INBOX":
            query = query.where(Folder.name == "INBOX")
        else:
            query = query.where(Folder.name == folder_name)
        folder = s.execute(query.with_for_update()).scalar_one_or_none()
        if folder is None:
            raise FolderNotFound(f"no folder {folder_name!r} in {mailbox.address}.")
        return folder

    def _insert_message(
        self: Store,
        s: Session,
        mailbox: Mailbox,
        folder: Folder,
        sha: str,
        size: int,
        summary: Summary,
        flags: str,
        internal_date: datetime,
        extra: dict[str, Any] | None,
    ) -> Message:
        seen, deleted = _flag_columns(flags)
        uid = folder.uidnext
        folder.uidnext = uid + 1
        folder.highest_modseq += 1
        folder.message_count += 1
        if not seen:
            folder.unseen_count += 1
        mailbox.used_bytes += size
        message = Message(
            folder_id=folder.id,
            uid=uid,
            blob_sha256=sha,
            size=size,
            internal_date=internal_date,
            flags=flags,
            seen=seen,
            deleted=deleted,
            modseq=folder.highest_modseq,
            from_addr=summary.from_addr,
            to_addrs=summary.to_addrs,
            subject=summary.subject,
            date_header=summary.date,
            message_id=summary.message_id,
            has_attachments=summary.has_attachments,
            extra=extra or {},
        )
        s.add(message)
        return message

    def deliver(
        self: Store,
        raw: bytes,
        recipients: Sequence[str],
        *,
        sender: str = "",
        folder: str = "INBOX",
        flags: Iterable[str] = (),
        action: str = audit.DELIVERY,
        actor: str = "",
        ip: str = "",
        internal_date: datetime | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, DeliveryOutcome]:
        """Deliver one message to local mailboxes; per-recipient outcome, never partial rows."""
        request = self.delivery_request(raw, recipients, sender=sender, folder=folder, flags=flags,
                                        action=action, actor=actor, ip=ip, internal_date=internal_date,
                                        extra=extra)
        outcomes, changed = self.write_grouped(BatchWork(deliver_batch, request))
        for event in changed:
            self.changes.publish(event)
        return outcomes

    def queue_deliveries(self: Store, requests: Sequence[DeliveryRequest]) -> list[Future[DeliveryResult]]:
        """Hand prepared deliveries to the group committer at once, without waiting:
        each future resolves after the commit that made it durable. The caller
        publishes the returned change events (see `deliver`)."""
        return self._committer.submit_many([BatchWork(deliver_batch, r) for r in requests])

    def delivery_request(
        self: Store,
        raw: bytes,
        recipients: Sequence[str],
        *,
        sender: str = "",
        folder: str = "INBOX",
        flags: Iterable[str] = (),
        action: str = audit.DELIVERY,
        actor: str = "",
        ip: str = "",
        internal_date: datetime | None = None,
        extra: dict[str, Any] | None = None,
        stored: tuple[str, Summary] | None = None,
    ) -> DeliveryRequest:
        """All a delivery needs before its transaction; the blob is durable on return.
        `stored`: (SHA-256, summary) of `raw` when its blob is already durable (written
        by an SMTP worker process)."""
        flag_text = self.norm_flags(flags)
        seen, deleted = _flag_columns(flag_text)
        return DeliveryRequest(
            summary=stored[1] if stored else summarize(raw),
            sha=stored[0] if stored else self.blobs.put(raw),
            size=len(raw),
            # Sorted so that concurrent PostgreSQL transactions lock rows in one order.
            targets=tuple(sorted({r.strip().lower() for r in recipients})),
            folder="INBOX" if folder.upper() == "INBOX" else folder,
            flags=flag_text, seen=seen, deleted=deleted,
            when=internal_date or datetime.now(UTC),
            action=action, actor=actor or sender, sender=sender, ip=ip, extra=extra or {},
        )

    def append(
        self: Store,
        address: str,
        folder: str,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
        actor: str = "",
        ip: str = "",
    ) -> tuple[int, int]:
        """IMAP APPEND: durable before it returns; (uidvalidity, uid)."""
        summary = summarize(raw)
        size = len(raw)
        with self.db.read() as s:
            mailbox = s.execute(select(Mailbox).where(Mailbox.address == address.lower())).scalar_one_or_none()
            if mailbox is None:
                raise MailboxNotFound(f"no mailbox {address}.")
            if mailbox.used_bytes + size > mailbox.quota_bytes:
                raise QuotaExceeded(f"mailbox {address} is over its quota.")
        sha = self.blobs.put(raw)
        with self.db.write() as s:
            mailbox = s.execute(
                select(Mailbox).where(Mailbox.address == address.lower()).with_for_update()
            ).scalar_one()
            if mailbox.used_bytes + size > mailbox.quota_bytes:
                raise QuotaExceeded(f"mailbox {address} is over its quota.")
            target = self._lock_folder(s, mailbox, folder)
            message = self._insert_message(s, mailbox, target, sha, size, summary,
                                           self.norm_flags(flags), internal_date or datetime.now(UTC), None)
            s.flush()
            audit.record(s, audit.APPEND, actor=actor or address, mailbox=mailbox.address, ip=ip,
                         message=f"{target.name}/{target.uidvalidity}/{message.uid}",
                         details={"size": size, "sha256": sha})
            result = (target.uidvalidity, message.uid)
            event = FolderChanged(mailbox.id, target.id, "new")
        self.changes.publish(event)
        return result

    def read_message(self: Store, address: str, folder: str, uid: int, *, actor: str = "",
                     ip: str = "", audited: bool = True) -> bytes:
        """The stored bytes of one message; each read is an audit event."""
        with self.db.read() as s:
            row = s.execute(
                select(Message.blob_sha256, Folder.uidvalidity, Folder.name)
                .join(Folder, Message.folder_id == Folder.id)
                .join(Mailbox, Folder.mailbox_id == Mailbox.id)
                .where(Mailbox.address == address.lower(), Folder.name == folder, Message.uid == uid)
            ).first()
        if row is None:
            raise FolderNotFound(f"no message {uid} in {address}/{folder}.")
        data = self.blobs.read(row[0])
        if audited:
            with self.db.write() as s:
                audit.record(s, audit.READ, actor=actor or address, mailbox=address.lower(), ip=ip,
                             message=f"{row[2]}/{row[1]}/{uid}")
        return data

    def list_messages(self: Store, address: str, folder: str = "INBOX", limit: int = 50,
                      offset: int = 0) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.execute(
                select(Message)
                .join(Folder, Message.folder_id == Folder.id)
                .join(Mailbox, Folder.mailbox_id == Mailbox.id)
                .where(Mailbox.address == address.lower(), Folder.name == folder)
                .order_by(Message.uid.desc()).limit(limit).offset(offset)
            ).scalars().all()
            return [
                {"uid": m.uid, "from": m.from_addr, "to": m.to_addrs, "subject": m.subject,
                 "date": m.date_header.isoformat() if m.date_header else None,
                 "message_id": m.message_id, "size": m.size, "flags": m.flags.split(),
                 "has_attachments": m.has_attachments, "sha256": m.blob_sha256,
                 "internal_date": m.internal_date.isoformat()}
                for m in rows
            ]
