"""Putting messages into mailboxes: SMTP delivery, IMAP APPEND, copies to Sent.

Order of durability (DESIGN rule 2): blob written and fsynced, then the rows and the
audit event committed in one transaction (fsynced by the database), then callers may
acknowledge. A crash between the two leaves an unreferenced blob, never a row
without its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from mssmail import audit
from mssmail.store.errors import FolderNotFound, MailboxNotFound, QuotaExceeded
from mssmail.store.events import FolderChanged
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
        summary = summarize(raw)
        sha = self.blobs.put(raw)
        size = len(raw)
        flag_text = self.norm_flags(flags)
        when = internal_date or datetime.now(UTC)
        # Sorted so that concurrent PostgreSQL transactions lock rows in one order.
        targets = sorted({r.strip().lower() for r in recipients})

        seen, deleted = _flag_columns(flag_text)
        mailboxes, folders, messages = Mailbox.__table__, Folder.__table__, Message.__table__

        # Core statements, not ORM objects: this is the hot path of every delivery.
        def work(s: Session) -> tuple[dict[str, DeliveryOutcome], list[FolderChanged]]:
            outcomes: dict[str, DeliveryOutcome] = {}
            changed: list[FolderChanged] = []
            for address in targets:
                box = s.execute(
                    select(mailboxes.c.id, mailboxes.c.disabled, mailboxes.c.used_bytes,
                           mailboxes.c.quota_bytes)
                    .where(mailboxes.c.address == address).with_for_update()
                ).first()
                if box is None:
                    outcomes[address] = DeliveryOutcome(address, False, code=550,
                                                        reason="5.1.1 No such mailbox here")
                    continue
                if box.disabled:
                    outcomes[address] = DeliveryOutcome(address, False, code=550,
                                                        reason="5.2.1 Mailbox disabled")
                    continue
                if box.used_bytes + size > box.quota_bytes:
                    outcomes[address] = DeliveryOutcome(address, False, code=552,
                                                        reason="5.2.2 Mailbox full")
                    continue
                name_clause = (folders.c.name == "INBOX") if folder.upper() == "INBOX" else (folders.c.name == folder)
                target = s.execute(
                    select(folders.c.id, folders.c.name, folders.c.uidvalidity, folders.c.uidnext,
                           folders.c.highest_modseq)
                    .where(folders.c.mailbox_id == box.id, name_clause).with_for_update()
                ).first()
                if target is None:
                    raise FolderNotFound(f"no folder {folder!r} in {address}.")
                uid, modseq = target.uidnext, target.highest_modseq + 1
                s.execute(update(folders).where(folders.c.id == target.id).values(
                    uidnext=uid + 1, highest_modseq=modseq,
                    message_count=folders.c.message_count + 1,
                    unseen_count=folders.c.unseen_count + (0 if seen else 1)))
                s.execute(update(mailboxes).where(mailboxes.c.id == box.id).values(
                    used_bytes=mailboxes.c.used_bytes + size))
                message_id = s.execute(insert(messages).values(
                    folder_id=target.id, uid=uid, blob_sha256=sha, size=size, internal_date=when,
                    flags=flag_text, seen=seen, deleted=deleted, modseq=modseq,
                    from_addr=summary.from_addr, to_addrs=summary.to_addrs, subject=summary.subject,
                    date_header=summary.date, message_id=summary.message_id,
                    has_attachments=summary.has_attachments, extra=extra or {},
                )).inserted_primary_key[0]
                audit.record(s, action, actor=actor or sender, mailbox=address, ip=ip,
                             message=f"{target.name}/{target.uidvalidity}/{uid}",
                             details={"sender": sender, "size": size, "sha256": sha,
                                      "message_id": summary.message_id})
                outcomes[address] = DeliveryOutcome(address, True, uid, target.uidvalidity, message_id)
                changed.append(FolderChanged(box.id, target.id, "new"))
            return outcomes, changed

        outcomes, changed = self.write_grouped(work)
        for event in changed:
            self.changes.publish(event)
        return outcomes

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
