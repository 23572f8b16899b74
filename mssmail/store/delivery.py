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
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from mssmail import audit
from mssmail.store.driversql import Driver, driver_for, process_columns
from mssmail.store.errors import FolderNotFound
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


class _Box(NamedTuple):
    id: int
    address: str
    disabled: bool
    used_bytes: int
    quota_bytes: int


class _FolderRow(NamedTuple):
    id: int
    mailbox_id: int
    name: str
    uidvalidity: int
    uidnext: int
    highest_modseq: int


_mailboxes, _folders, _messages = Mailbox.__table__, Folder.__table__, Message.__table__
_MESSAGE_COLUMNS = ("folder_id", "uid", "blob_sha256", "size", "internal_date", "flags", "seen", "deleted",
                    "modseq", "from_addr", "to_addrs", "subject", "date_header", "message_id", "has_attachments",
                    "extra")
# Built once: constructing a statement costs more than running it on this path.
_LOCK_MAILBOXES = (
    select(*(_mailboxes.c[name] for name in _Box._fields))
    .where(_mailboxes.c.address.in_(bindparam("addresses", expanding=True)))
    .order_by(_mailboxes.c.id).with_for_update()
)
_LOCK_FOLDERS = (
    select(*(_folders.c[name] for name in _FolderRow._fields))
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

# (folder id, next uid, highest modseq, messages added, unseen added)
FolderAdvance = tuple[int, int, int, int, int]


class _CoreWrites:
    """The statements of a batch delivery as SQLAlchemy Core: any dialect."""

    def __init__(self, s: Connection) -> None:
        self.s = s

    def lock_mailboxes(self, addresses: list[str]) -> list[_Box]:
        return [_Box._make(row) for row in self.s.execute(_LOCK_MAILBOXES, {"addresses": addresses})]

    def lock_folders(self, mailbox_ids: list[int], names: list[str]) -> list[_FolderRow]:
        return [_FolderRow._make(row) for row in self.s.execute(
            _LOCK_FOLDERS, {"mailbox_ids": mailbox_ids, "names": names})]

    def insert_messages(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """The new rows' ids, in the order of `rows` (values in `_MESSAGE_COLUMNS` order)."""
        params = [dict(zip(_MESSAGE_COLUMNS, row, strict=True)) for row in rows]
        return list(self.s.execute(_INSERT_MESSAGES, params).scalars().all())

    def advance_folders(self, advances: list[FolderAdvance]) -> None:
        self.s.execute(_ADVANCE_FOLDERS, [{"fid": fid, "next_uid": uid, "modseq": modseq, "added": added,
                                           "unseen": unseen} for fid, uid, modseq, added, unseen in advances])

    def set_used_bytes(self, used: list[tuple[int, int]]) -> None:
        self.s.execute(_SET_USED_BYTES, [{"bid": bid, "new_used": value} for bid, value in used])


# Rows per INSERT: 16 values each, well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
_INSERT_CHUNK = 500


class _DriverWrites(_CoreWrites):
    """The same statements as pre-built SQL on the DBAPI cursor (see `driversql`): the
    group committer runs them for every delivery, Core's per-statement Python cost was
    most of the commit thread's time."""

    def __init__(self, s: Connection, driver: Driver) -> None:
        super().__init__(s)
        self.driver = driver

    def lock_mailboxes(self, addresses: list[str]) -> list[_Box]:
        d = self.driver
        sql = (f"SELECT {', '.join(_Box._fields)} FROM {_mailboxes.name} WHERE address IN ({d.marks(len(addresses))})"
               f" ORDER BY id{d.for_update}")
        return [_Box._make(row) for row in d.execute(self.s, sql, addresses).fetchall()]

    def lock_folders(self, mailbox_ids: list[int], names: list[str]) -> list[_FolderRow]:
        d = self.driver
        sql = (f"SELECT {', '.join(_FolderRow._fields)} FROM {_folders.name} "
               f"WHERE mailbox_id IN ({d.marks(len(mailbox_ids))}) AND name IN ({d.marks(len(names))})"
               f" ORDER BY id{d.for_update}")
        return [_FolderRow._make(row) for row in d.execute(self.s, sql, [*mailbox_ids, *names]).fetchall()]

    def insert_messages(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """Multi-row INSERT ... RETURNING: the returned rows are matched back by
        (folder_id, uid), unique in the table, so their order does not matter."""
        d = self.driver
        values = process_columns(rows, d.processors(_messages, _MESSAGE_COLUMNS))  # type: ignore[arg-type]
        row_marks = f"({d.marks(len(_MESSAGE_COLUMNS))})"
        ids: dict[tuple[int, int], int] = {}
        for start in range(0, len(values), _INSERT_CHUNK):
            chunk = values[start:start + _INSERT_CHUNK]
            sql = (f"INSERT INTO {_messages.name} ({', '.join(_MESSAGE_COLUMNS)}) "
                   f"VALUES {', '.join([row_marks] * len(chunk))} RETURNING id, folder_id, uid")
            params = [value for row in chunk for value in row]
            ids.update(((folder_id, uid), id_) for id_, folder_id, uid in d.execute(self.s, sql, params).fetchall())
        return [ids[(row[0], row[1])] for row in rows]

    def advance_folders(self, advances: list[FolderAdvance]) -> None:
        m = self.driver.mark
        sql = (f"UPDATE {_folders.name} SET uidnext = {m}, highest_modseq = {m}, "
               f"message_count = message_count + {m}, unseen_count = unseen_count + {m} WHERE id = {m}")
        self.driver.execute_many(self.s, sql, [(uid, modseq, added, unseen, fid)
                                               for fid, uid, modseq, added, unseen in advances])

    def set_used_bytes(self, used: list[tuple[int, int]]) -> None:
        m = self.driver.mark
        self.driver.execute_many(self.s, f"UPDATE {_mailboxes.name} SET used_bytes = {m} WHERE id = {m}",
                                 [(value, bid) for bid, value in used])


def deliver_batch(s: Connection, requests: Sequence[DeliveryRequest]) -> list[DeliveryResult | BaseException]:
    """Deliver many messages with a fixed number of statements, whatever their number.

    Mailboxes and folders are read (and locked) once for the whole batch, UIDs and
    quotas are worked out in Python in request order, then the rows go in as
    multi-row statements and the audit events as one chained batch. A request whose
    folder does not exist fails alone, before anything is written. This is the hot
    path of every delivery: under load the group committer hands it dozens of
    messages per transaction, so its statements run on the DBAPI cursor where the
    dialect allows, otherwise through Core (tests/unit/store/test_driversql.py checks
    that both store the same rows).
    """
    driver = driver_for(s)
    return _deliver(_CoreWrites(s) if driver is None else _DriverWrites(s, driver), requests)


def _deliver(io: _CoreWrites, requests: Sequence[DeliveryRequest]) -> list[DeliveryResult | BaseException]:
    addresses = sorted({a for r in requests for a in r.targets})
    boxes = {row.address: row for row in io.lock_mailboxes(addresses)} if addresses else {}
    used = {row.id: row.used_bytes for row in boxes.values()}
    names = sorted({r.folder for r in requests})
    folder_rows = {(row.mailbox_id, row.name): row for row in io.lock_folders(sorted(used), names)} if used else {}
    # Running state per folder: [uidnext, highest_modseq, added, unseen added].
    state = {row.id: [row.uidnext, row.highest_modseq, 0, 0] for row in folder_rows.values()}

    results: list[DeliveryResult | BaseException] = []
    message_rows: list[tuple[Any, ...]] = []
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
        summary = request.summary
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
            # In _MESSAGE_COLUMNS order.
            message_rows.append((
                target.id, uid, request.sha, request.size, request.when, request.flags, request.seen,
                request.deleted, modseq, summary.from_addr, summary.to_addrs, summary.subject, summary.date,
                summary.message_id, summary.has_attachments, request.extra))
            events.append(audit.Event(
                request.action, actor=request.actor, mailbox=address, ip=request.ip,
                message=f"{target.name}/{target.uidvalidity}/{uid}",
                details={"sender": request.sender, "size": request.size, "sha256": request.sha,
                         "message_id": summary.message_id}))
            pending.append((outcomes, address, uid, target.uidvalidity))
            changed.append(FolderChanged(box.id, target.id, "new"))
        results.append((outcomes, changed))

    if message_rows:
        ids = io.insert_messages(message_rows)
        for (outcomes, address, uid, uidvalidity), message_id in zip(pending, ids, strict=True):
            outcomes[address] = DeliveryOutcome(address, True, uid, uidvalidity, message_id)
        io.advance_folders([(fid, v[0], v[1], v[2], v[3]) for fid, v in state.items() if v[2]])
        io.set_used_bytes([(row.id, used[row.id]) for row in boxes.values() if used[row.id] != row.used_bytes])
        audit.record_many(io.s, events)
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
