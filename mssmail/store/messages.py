"""Folder and message operations for readers (IMAP, and any client that needs folders).

What a reader may touch is decided here, not in the protocol: `actor` is the logged-in
mailbox; it reaches its own mailbox and those delegated to it (`Delegation.rights`
"read" or "full"). A `FolderRef` is handed out only after that check and names one
folder of one mailbox; later calls take the ref.

Rules kept here (RFC 3501 section 2.3.1.1, RFC 7162):
- a new message gets the folder's `uidnext`, which only grows: UIDs are never reused;
- `uidvalidity` is set when the folder is created and never changes (a rename keeps it);
- every change to messages of a folder takes a new `highest_modseq` under the folder's
  row lock, and the changed messages carry it, so readers can ask "what changed since";
- every read of message bytes, flag change, expunge, copy and move is an audit event,
  in the same transaction as the change (or before the bytes are returned).
Changes are published on `store.changes` after commit, for sessions of this process;
sessions of other processes see them through `highest_modseq`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    Integer,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.types import ARRAY

from mssmail import audit
from mssmail.store.actors import Actor, ActorKind, as_actor
from mssmail.store.errors import (
    AccessDenied,
    FolderExists,
    FolderNotFound,
    MailboxNotFound,
    QuotaExceeded,
    StoreError,
)
from mssmail.store.events import FolderChanged
from mssmail.store.models import (
    Delegation,
    ExpungedUid,
    Folder,
    Mailbox,
    Message,
    Subscription,
    table,
)
from mssmail.store.query import contains, ranges_of
from mssmail.store.subscriptions import rename_subscriptions
from mssmail.store.summary import summarize

if TYPE_CHECKING:
    from mssmail.store.service import Store

log = logging.getLogger(__name__)
_M, _F, _MB, _X = table(Message), table(Folder), table(Mailbox), table(ExpungedUid)
T = TypeVar("T")

DELIMITER = "/"
MAX_FOLDER_NAME = 500
WRITE_RIGHTS = ("owner", "full")
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
_BATCH = 500  # rows per IN (...) list
# `_access`'s two reads, built once: every page and IMAP command checks access, and
# building a `select` and its cache key each time cost about as much as running it.
_ACCESS_MAILBOX = select(Mailbox.id, Mailbox.address, Mailbox.disabled).where(Mailbox.address == bindparam("address"))
_ACCESS_RIGHTS = select(Delegation.rights).join(Mailbox, Delegation.delegate_id == Mailbox.id).where(
    Delegation.mailbox_id == bindparam("mailbox_id"), Mailbox.address == bindparam("delegate"))
MAX_UID_CLAUSES = 64  # UID ranges put in a query; a longer set is bounded, then filtered in Python
UID_LISTS_KEPT = 64  # folders whose UID list a store remembers (see `_folder_uid_list`)
_uid_lists_lock = threading.Lock()


class FolderNameError(StoreError):
    pass


class ReadOnly(AccessDenied):
    pass


@dataclass(frozen=True)
class FolderRef:
    """One folder of one mailbox, reached by `principal` with `rights` (owner, full,
    read); `actor` is how audit events name the principal (`Actor.audit_name`).

    Handed out only by `folder_open` / `open_folder`, after the access check: every call
    that takes a ref acts within these rights.
    """

    actor: str
    address: str
    mailbox_id: int
    folder_id: int
    name: str
    uidvalidity: int
    rights: str
    principal: Actor

    @property
    def writable(self) -> bool:
        return self.rights in WRITE_RIGHTS

    def ref(self, uid: int) -> str:
        """How audit events name a message: folder/uidvalidity/uid."""
        return f"{self.name}/{self.uidvalidity}/{uid}"


@dataclass(frozen=True)
class FolderInfo:
    name: str
    special_use: str | None
    subscribed: bool
    messages: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highest_modseq: int


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int
    messages: int
    unseen: int
    highest_modseq: int


@dataclass(frozen=True)
class MessageMeta:
    id: int
    uid: int
    flags: str
    size: int
    internal_date: datetime
    modseq: int
    sha256: str
    extra: dict[str, Any]
    imap_cache: bytes | None = None  # Message.imap_cache, when asked for


@dataclass(frozen=True)
class Opened:
    """What SELECT needs: the ref, the state, every UID in order, the first unseen UID."""

    ref: FolderRef
    state: FolderState
    uids: list[int]
    first_unseen_uid: int | None


_last_uidvalidity = 0
_uidvalidity_lock = threading.Lock()


def fresh_uidvalidity() -> int:
    """A UIDVALIDITY for a new folder: a 32-bit nz-number (RFC 3501 section 9) that grows
    with time (1/16 s steps) and strictly within this process, so a folder deleted and
    created again under the same name never gets its old value (section 2.3.1.1)."""
    global _last_uidvalidity
    with _uidvalidity_lock:
        value = max(int(time.time() * 16) % 2**32, _last_uidvalidity + 1) % 2**32 or 1
        _last_uidvalidity = value
        return value


def imap_uidvalidity(stored: int) -> int:
    """The UIDVALIDITY shown to IMAP clients: a 32-bit nz-number. Folders made by
    `create_mailbox` carry time*16+random, which is wider than 32 bits; the low 32 bits
    keep it distinct from any earlier folder of the same name."""
    return stored % 2**32 or 1


def normalize_folder_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 section 5.1), so is an `INBOX/` prefix."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name.upper().startswith("INBOX" + DELIMITER):
        return "INBOX" + name[5:]
    return name


def check_folder_name(name: str) -> str:
    name = normalize_folder_name(name)
    if not name or len(name) > MAX_FOLDER_NAME:
        raise FolderNameError("a folder name must have 1 to 500 characters.")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise FolderNameError("a folder name cannot contain control characters.")
    parts = name.split(DELIMITER)
    if any(not p for p in parts):
        raise FolderNameError(f"a folder name cannot start or end with {DELIMITER!r} or contain it twice.")
    if any(c in name for c in "*%"):
        raise FolderNameError("a folder name cannot contain '*' or '%'.")
    # Path-like levels mean nothing in a database and everything to a client or tool
    # that maps folders to files (as Dovecot does, refuse them).
    if any(p.strip() in (".", "..") for p in parts):
        raise FolderNameError("a folder name cannot have '.' or '..' as one of its levels.")
    return name


def split_flags(text: str) -> list[str]:
    return text.split() if text else []


def apply_flags(current: Sequence[str], mode: str, flags: Iterable[str]) -> list[str]:
    """STORE semantics (RFC 3501 section 6.4.6); flags compare case-insensitively."""
    wanted = list(dict.fromkeys(flags))
    if mode == "":
        return wanted
    have = {f.lower(): f for f in current}
    if mode == "+":
        for flag in wanted:
            have.setdefault(flag.lower(), flag)
    else:
        for flag in wanted:
            have.pop(flag.lower(), None)
    return list(have.values())


def _is_retryable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40P01", "40001")  # deadlock detected, serialization failure


class MessageOps:
    # --- plumbing -------------------------------------------------------------------
    def _write(self: Store, work: Callable[[Session], T]) -> T:
        """A write transaction, retried when PostgreSQL resolves a deadlock against us."""
        for attempt in range(3):
            try:
                with self.db.write() as s:
                    return work(s)
            except DBAPIError as exc:
                if attempt == 2 or not _is_retryable(exc):
                    raise
                log.info("retrying a write after %s", exc.orig)
        raise AssertionError("unreachable")

    def _publish(self: Store, events: Iterable[FolderChanged]) -> None:
        """Tell the change bus; inside a `db.unit()`, once it has committed (a listener
        must never see a change that could still be rolled back)."""
        wanted = list(dict.fromkeys(events))

        def publish() -> None:
            for event in wanted:
                self.changes.publish(event)

        self.db.after_commit(publish)

    def _access(self: Store, s: Session | Connection, actor: Actor | str,
                address: str) -> tuple[int, str, str]:
        """(mailbox id, address, rights) if `actor` may open `address`, else AccessDenied.

        A user: `owner` of their own mailbox, the delegated rights on another (not if
        it is disabled). An administrator or a system component: `full` on any mailbox
        (see `mssmail.store.actors`)."""
        who = as_actor(actor)
        address = address.strip().lower()
        row = s.execute(_ACCESS_MAILBOX, {"address": address}).first()
        if row is None:
            raise MailboxNotFound(f"no mailbox {address}.")
        if who.kind is not ActorKind.USER:
            return row.id, row.address, "full"
        if address == who.name:
            return row.id, row.address, "owner"
        if row.disabled:
            raise AccessDenied(f"mailbox {address} is disabled.")
        rights = s.execute(_ACCESS_RIGHTS, {"mailbox_id": row.id, "delegate": who.name}).scalar_one_or_none()
        if rights is None:
            raise AccessDenied(f"{who.name} has no access to {address}.")
        return row.id, row.address, rights

    @staticmethod
    def _folder_row(s: Session | Connection, mailbox_id: int, name: str, lock: bool = False) -> Any:
        query = select(Folder.id, Folder.name, Folder.uidvalidity, Folder.uidnext, Folder.message_count,
                       Folder.unseen_count, Folder.highest_modseq, Folder.special_use
                       ).where(Folder.mailbox_id == mailbox_id, Folder.name == normalize_folder_name(name))
        if lock:
            query = query.with_for_update()
        row = s.execute(query).first()
        if row is None:
            raise FolderNotFound(f"no folder {name!r}.")
        return row

    @staticmethod
    def _bump(s: Session, folder_id: int) -> int:
        """A new mod-sequence for the folder, under its row lock (RFC 7162 section 3)."""
        current = s.execute(select(Folder.highest_modseq).where(Folder.id == folder_id)
                            .with_for_update()).scalar_one()
        s.execute(update(_F).where(_F.c.id == folder_id).values(highest_modseq=current + 1))
        return current + 1

    # --- folders --------------------------------------------------------------------
    def folder_list(self: Store, actor: Actor | str, address: str) -> list[FolderInfo]:
        with self.db.read() as s:
            mailbox_id, box, _ = self._access(s, actor, address)
            rows = s.execute(
                select(Folder.name, Folder.special_use, Folder.message_count,
                       Folder.unseen_count, Folder.uidnext, Folder.uidvalidity, Folder.highest_modseq)
                .where(Folder.mailbox_id == mailbox_id).order_by(Folder.name)
            ).all()
            # `subscribed`: on the actor's own list (mssmail/store/subscriptions.py).
            subscribed = self._subscribed_folders(s, self._subscriber_id(s, actor, box), box)
        return [FolderInfo(row.name, row.special_use, row.name in subscribed, *row[2:]) for row in rows]

    def folder_create(self: Store, actor: Actor | str, address: str, name: str, *,
                      special_use: str | None = None, ip: str = "", subscribed: bool = True) -> FolderInfo:
        name = check_folder_name(name)
        if special_use is not None and special_use not in SPECIAL_USES:
            raise StoreError(f"unknown special use {special_use}.")

        def work(s: Session) -> tuple[FolderInfo, FolderChanged]:
            mailbox_id, box, rights = self._access(s, actor, address)
            if rights not in WRITE_RIGHTS:
                raise ReadOnly(f"{as_actor(actor).name} may only read {box}.")
            exists = s.execute(select(Folder.id).where(Folder.mailbox_id == mailbox_id,
                                                       Folder.name == name)).first()
            if exists:
                raise FolderExists(f"folder {name!r} already exists.")
            folder = Folder(mailbox_id=mailbox_id, name=name, special_use=special_use,
                            uidvalidity=fresh_uidvalidity(), uidnext=1, highest_modseq=1,
                            message_count=0, unseen_count=0)
            s.add(folder)
            if subscribed:
                subscriber = self._subscriber_id(s, actor, box)
                if name not in self._subscribed_folders(s, subscriber, box):
                    s.add(Subscription(subscriber_id=subscriber, address=box, folder=name))
            s.flush()
            audit.record(s, audit.ADMIN, actor=as_actor(actor).audit_name, mailbox=box, ip=ip,
                         details={"op": "folder.create", "folder": name})
            info = FolderInfo(name, special_use, subscribed, 0, 0, 1, folder.uidvalidity, 1)
            return info, FolderChanged(mailbox_id, folder.id, "folder")

        info, event = self._write(work)
        self._publish([event])
        return info

    def folder_delete(self: Store, actor: Actor | str, address: str, name: str, *, ip: str = "") -> int:
        """Remove a folder and its messages (not its sub-folders); how many messages went."""
        name = normalize_folder_name(name)
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted.")

        def work(s: Session) -> tuple[int, FolderChanged]:
            mailbox_id, box, rights = self._access(s, actor, address)
            if rights not in WRITE_RIGHTS:
                raise ReadOnly(f"{as_actor(actor).name} may only read {box}.")
            used = s.execute(select(Mailbox.used_bytes).where(Mailbox.id == mailbox_id)
                             .with_for_update()).scalar_one()
            folder = self._folder_row(s, mailbox_id, name, lock=True)
            count, size = s.execute(select(func.count(), func.coalesce(func.sum(Message.size), 0))
                                    .where(Message.folder_id == folder.id)).one()
            s.execute(delete(_M).where(_M.c.folder_id == folder.id))
            s.execute(delete(_F).where(_F.c.id == folder.id))
            s.execute(update(_MB).where(_MB.c.id == mailbox_id)
                      .values(used_bytes=max(used - int(size), 0)))
            audit.record(s, audit.ADMIN, actor=as_actor(actor).audit_name, mailbox=box, ip=ip,
                         details={"op": "folder.delete", "folder": name, "messages": count,
                                  "uidvalidity": folder.uidvalidity})
            return count, FolderChanged(mailbox_id, folder.id, "folder")

        count, event = self._write(work)
        self._publish([event])
        return count

    def folder_rename(self: Store, actor: Actor | str, address: str, old: str, new: str, *,
                      ip: str = "") -> None:
        """RFC 3501 section 6.3.5: sub-folders follow; renaming INBOX moves its messages."""
        old, new = normalize_folder_name(old), check_folder_name(new)
        if new == "INBOX":
            raise FolderNameError("cannot rename a folder to INBOX.")
        if old != "INBOX" and (new == old or new.startswith(old + DELIMITER)):
            raise FolderNameError("cannot rename a folder to itself or under itself.")

        def work(s: Session) -> list[FolderChanged]:
            mailbox_id, box, rights = self._access(s, actor, address)
            if rights not in WRITE_RIGHTS:
                raise ReadOnly(f"{as_actor(actor).name} may only read {box}.")
            source = self._folder_row(s, mailbox_id, old, lock=True)
            taken = s.execute(select(Folder.name).where(
                Folder.mailbox_id == mailbox_id,
                or_(Folder.name == new, Folder.name.startswith(new + DELIMITER, autoescape=True)))).first()
            if taken:
                raise FolderExists(f"folder {new!r} already exists.")
            events = [FolderChanged(mailbox_id, source.id, "folder")]
            if old == "INBOX":
                target = Folder(mailbox_id=mailbox_id, name=new,
                                uidvalidity=fresh_uidvalidity(), uidnext=1, highest_modseq=1,
                                message_count=0, unseen_count=0)
                s.add(target)
                s.flush()
                rows = s.execute(select(Message).where(Message.folder_id == source.id)
                                 .order_by(Message.uid)).scalars().all()
                self._transfer(s, source, target.id, rows, move=True)
                events.append(FolderChanged(mailbox_id, target.id, "new"))
                # INBOX stays (and stays on the lists); the folder holding its mail is
                # subscribed for the renamer, as a folder created by hand would be.
                subscriber = self._subscriber_id(s, actor, box)
                if new not in self._subscribed_folders(s, subscriber, box):
                    s.add(Subscription(subscriber_id=subscriber, address=box, folder=new))
            else:
                rename_subscriptions(s, box, old, new)
                children = s.execute(select(Folder.id, Folder.name).where(
                    Folder.mailbox_id == mailbox_id,
                    Folder.name.startswith(old + DELIMITER, autoescape=True))).all()
                s.execute(update(_F).where(_F.c.id == source.id).values(name=new))
                for child_id, child_name in children:
                    s.execute(update(_F).where(_F.c.id == child_id)
                              .values(name=new + child_name[len(old):]))
                    events.append(FolderChanged(mailbox_id, child_id, "folder"))
            audit.record(s, audit.ADMIN, actor=as_actor(actor).audit_name, mailbox=box, ip=ip,
                         details={"op": "folder.rename", "from": old, "to": new})
            return events

        self._publish(self._write(work))

    def folder_open(self: Store, actor: Actor | str, address: str, name: str, *, uids: bool = True) -> Opened:
        """SELECT/EXAMINE: the folder's state and its UIDs, as of one moment.

        The state is read before the UIDs: anything committed in between has a
        mod-sequence above the state's and shows up again at the next poll. A Core
        connection: the UID list of a large folder is most of the work.
        """
        with self.db.engine.connect() as s:
            mailbox_id, box, rights = self._access(s, actor, address)
            row = self._folder_row(s, mailbox_id, name)
            who = as_actor(actor)
            ref = FolderRef(who.audit_name, box, mailbox_id, row.id, row.name, row.uidvalidity, rights, who)
            state = FolderState(row.uidvalidity, row.uidnext, row.message_count, row.unseen_count,
                                row.highest_modseq)
            uid_list: list[int] = []
            first_unseen = None
            if uids:
                uid_list = self._folder_uid_list(s, row)
                if row.unseen_count:
                    first_unseen = s.execute(select(func.min(Message.uid)).where(
                        Message.folder_id == row.id, Message.seen.is_(False))).scalar_one_or_none()
        return Opened(ref, state, uid_list, first_unseen)

    def _folder_uid_list(self: Store, s: Any, row: Any) -> list[int]:
        """The folder's UIDs, ascending, remembered per folder for the next SELECT.

        Every change to a folder's set of UIDs (append, delivery, expunge, copy or move
        in, move out) takes a new `highest_modseq` in the same transaction (RFC 7162),
        so a folder whose UIDVALIDITY, UIDNEXT, message count and HIGHESTMODSEQ are those
        remembered has the same UIDs: listing 100,000 rows again is not needed.
        """
        key = (row.uidvalidity, row.uidnext, row.message_count, row.highest_modseq)
        cache: OrderedDict[int, tuple[Any, tuple[int, ...]]] | None = self.__dict__.get("_uid_lists")
        if cache is None:
            cache = self.__dict__.setdefault("_uid_lists", OrderedDict())
        with _uid_lists_lock:
            hit = cache.get(row.id)
            if hit is not None and hit[0] == key:
                cache.move_to_end(row.id)
                return list(hit[1])
        uid_list = list(s.execute(select(Message.uid).where(Message.folder_id == row.id)
                                  .order_by(Message.uid)).scalars().all())
        with _uid_lists_lock:
            cache[row.id] = (key, tuple(uid_list))
            cache.move_to_end(row.id)
            while len(cache) > UID_LISTS_KEPT:
                cache.popitem(last=False)
        return uid_list

    def folder_state(self: Store, ref: FolderRef) -> FolderState | None:
        """The folder's counters now; None if it was deleted (or renamed away and replaced)."""
        with self.db.read() as s:
            row = s.execute(select(Folder.uidvalidity, Folder.uidnext, Folder.message_count,
                                   Folder.unseen_count, Folder.highest_modseq)
                            .where(Folder.id == ref.folder_id)).first()
        if row is None or row.uidvalidity != ref.uidvalidity:
            return None
        return FolderState(*row)

    def folder_size(self: Store, actor: Actor | str, address: str, name: str) -> int:
        """STATUS SIZE (RFC 8438): the octets of the folder's messages."""
        with self.db.read() as s:
            mailbox_id, _, _ = self._access(s, actor, address)
            folder = self._folder_row(s, mailbox_id, name)
            return int(s.execute(select(func.coalesce(func.sum(Message.size), 0))
                                 .where(Message.folder_id == folder.id)).scalar_one())

    def folder_changes(self: Store, ref: FolderRef, since_modseq: int) -> list[tuple[int, str, int]]:
        """(uid, flags, modseq) of messages added or changed after `since_modseq`."""
        with self.db.engine.connect() as s:
            rows = s.execute(select(Message.uid, Message.flags, Message.modseq)
                             .where(Message.folder_id == ref.folder_id, Message.modseq > since_modseq)
                             .order_by(Message.uid)).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def folder_uids(self: Store, ref: FolderRef) -> list[int]:
        with self.db.engine.connect() as s:
            return list(s.execute(select(Message.uid).where(Message.folder_id == ref.folder_id)
                                  .order_by(Message.uid)).scalars().all())

    def quota_of(self: Store, actor: Actor | str, address: str) -> tuple[int, int]:
        """(used, limit) in octets, for QUOTA (RFC 9208)."""
        with self.db.read() as s:
            mailbox_id, _, _ = self._access(s, actor, address)
            row = s.execute(select(Mailbox.used_bytes, Mailbox.quota_bytes)
                            .where(Mailbox.id == mailbox_id)).one()
        return int(row[0]), int(row[1])

    # --- reading --------------------------------------------------------------------
    @staticmethod
    def _uid_clause(ranges: Sequence[tuple[int, int]] | None) -> Any:
        """`uid BETWEEN a AND b OR ...` for a UID set. The statement's *shape* is what
        SQLAlchemy caches its compiled form under, so it depends on the set's size
        bucket only: the ranges are padded (repeating the last one) to 1, 2, 4, ... 64
        of them. With one shape per mix of `==` and BETWEEN and per count, the IMAP
        sessions of bench/imap_stress.py compiled a new statement for most FETCH and
        STORE commands, and the engine's cache of compiled statements (500 of them)
        grew the process by tens of MiB."""
        if ranges is None:
            return None
        if not ranges:
            return Message.uid < 0
        if len(ranges) > MAX_UID_CLAUSES:  # a long set: bound it and filter in Python
            return Message.uid.between(ranges[0][0], ranges[-1][1])
        padded = list(ranges) + [ranges[-1]] * ((1 << (len(ranges) - 1).bit_length()) - len(ranges))
        clauses = [Message.uid.between(a, b) for a, b in padded]
        return clauses[0] if len(clauses) == 1 else or_(*clauses)

    def messages_meta(self: Store, ref: FolderRef, ranges: Sequence[tuple[int, int]] | None = None,
                      *, with_extra: bool = False, with_cache: bool = False, with_date: bool = True,
                      columns: Sequence[str] = ()) -> list[MessageMeta]:
        """Metadata of the messages whose UIDs fall in `ranges` (None: all), by UID;
        `extra` (JSON, decoded per row) and `imap_cache` (bytes) only when asked for,
        `internal_date` (None without `with_date`) unless told it is not needed. A Core
        connection, not an ORM session: a listing of 100,000 rows spends half its time
        in ORM row handling otherwise."""
        cols = [Message.id, Message.uid, Message.flags, Message.size,
                Message.internal_date if with_date else null(),
                Message.modseq, Message.blob_sha256,
                Message.extra if with_extra else null(), Message.imap_cache if with_cache else null()]
        query = select(*cols).where(Message.folder_id == ref.folder_id).order_by(Message.uid)
        clause = self._uid_clause(ranges)
        if clause is not None:
            query = query.where(clause)
        with self.db.engine.connect() as connection:
            rows = connection.execute(query).all()
        out = [MessageMeta(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or {}, r[8]) for r in rows]
        if ranges is not None and len(ranges) > MAX_UID_CLAUSES:
            out = [m for m in out if contains(ranges, m.uid)]
        return out

    def search_rows(self: Store, ref: FolderRef, columns: Sequence[str],
                    needed: Sequence[str] | None = None,
                    uids: AbstractSet[int] | None = None) -> list[tuple[Any, ...]]:
        """(uid, *columns) of every message of the folder (only those of `uids` when
        given: the full-text index's candidates), for SEARCH; a column not in `needed`
        (when given) comes back as None, without being read."""
        allowed = {"flags", "size", "internal_date", "date_header", "from_addr", "to_addrs", "subject",
                   "modseq", "blob_sha256", "has_attachments", "extra", "id"}
        bad = [c for c in columns if c not in allowed]
        if bad:
            raise ValueError(f"not a searchable column: {bad[0]}")
        query = select(Message.uid, *(getattr(Message, c) if needed is None or c in needed else null()
                                      for c in columns)).where(
            Message.folder_id == ref.folder_id).order_by(Message.uid)
        with self.db.engine.connect() as connection:
            if uids is None:
                return [tuple(r) for r in connection.execute(query).all()]
            if len(uids) > 20 * _BATCH:  # most of a large folder: one pass, filtered here
                return [tuple(r) for r in connection.execute(query).all() if r[0] in uids]
            # One statement with the UIDs as one parameter (a JSON array on SQLite, an
            # array on PostgreSQL): 20,000 index hits are one query, not 40 IN lists.
            wanted = sorted(uids)
            if connection.dialect.name == "postgresql":
                # IN (SELECT unnest(...)): a hashed semi-join; `= ANY(array)` would compare
                # every row of the folder with every UID (1 s for 4,000 UIDs in 20,000 rows).
                listed = Message.uid.in_(select(func.unnest(bindparam("uids", wanted, type_=ARRAY(Integer))))
                                         .scalar_subquery())
            else:
                listed = Message.uid.in_(select(literal_column("value", Integer)).select_from(
                    func.json_each(bindparam("uids", json.dumps(wanted)))))
            return [tuple(r) for r in connection.execute(query.where(listed)).all()]

    def messages_content(self: Store, ref: FolderRef, metas: Sequence[MessageMeta], *,
                         purpose: str, ip: str = "") -> dict[int, bytes]:
        """The bytes of messages as their reader sees them (`store.view`), for work done
        on the reader's behalf whose result is not the bytes (IMAP works out ENVELOPE and
        BODYSTRUCTURE once and caches them): within the ref's rights, one audit event
        for the call (action `purpose`, e.g. "structure") instead of one read per message."""
        wanted = {m.uid for m in metas}
        rows = [m for m in self.messages_meta(ref, ranges_of(wanted), with_extra=True) if m.uid in wanted]
        if not rows:
            return {}

        def work(s: Session) -> None:
            audit.record(s, purpose, actor=ref.actor, mailbox=ref.address, ip=ip,
                         message=f"{ref.name}/{ref.uidvalidity}",
                         details={"uids": _compress(m.uid for m in rows), "count": len(rows)})

        self._write(work)
        return {m.uid: self.view(ref.address, self.blobs.read(m.sha256), m.extra) for m in rows}

    def audit_search(self: Store, ref: FolderRef, criteria: str, scanned: int, matched: int, *,
                     ip: str = "") -> None:
        """A content search reads every message it scans: one event per SEARCH."""
        def work(s: Session) -> None:
            audit.record(s, "search", actor=ref.actor, mailbox=ref.address, ip=ip,
                         message=f"{ref.name}/{ref.uidvalidity}",
                         details={"criteria": criteria[:500], "scanned": scanned, "matched": matched})

        self._write(work)

    def messages_read(self: Store, ref: FolderRef, uids: Sequence[int], *, mark_seen: bool,
                      ip: str = "", view: bool = True, max_bytes: int | None = None,
                      with_cache: bool = True) -> tuple[list[MessageMeta], dict[int, bytes], set[int]]:
        """Message bytes for a reader: each read is an audit event (recorded before the
        bytes are returned, all the events of a call in one batch); with `mark_seen`,
        \\Seen is set as RFC 3501 section 6.4.5 says.

        Returns the messages' metadata (flags after the change), their bytes as the
        reader sees them (`store.view`) and the UIDs that this call marked \\Seen. With
        `max_bytes`, only the first messages (by UID, at least one) whose sizes add up to
        at most that are read: the caller asks again for those after the last returned.
        """
        metas = self.messages_meta(ref, [(u, u) for u in uids] if len(uids) <= 50 else
                                   ranges_of(uids), with_extra=True, with_cache=with_cache)
        wanted = set(uids)
        metas = [m for m in metas if m.uid in wanted]
        if max_bytes is not None:
            total = 0
            for index, meta in enumerate(metas):
                total += meta.size
                if index and total > max_bytes:
                    metas = metas[:index]
                    break
        data = {m.uid: self.blobs.read(m.sha256) for m in metas}
        to_mark = [m for m in metas if mark_seen and ref.writable and "\\seen" not in m.flags.lower()]

        def work(s: Session) -> dict[int, tuple[str, int]]:
            changed: dict[int, tuple[str, int]] = {}
            if to_mark:
                modseq = self._bump(s, ref.folder_id)
                rows = s.execute(select(Message.id, Message.uid, Message.flags, Message.seen).where(
                    Message.id.in_([m.id for m in to_mark])).with_for_update()).all()
                updates = []
                for row in rows:
                    if row.seen:
                        continue
                    flags = self.norm_flags([*split_flags(row.flags), "\\Seen"])
                    updates.append({"b_id": row.id, "b_flags": flags})
                    changed[row.uid] = (flags, modseq)
                if updates:
                    s.execute(update(_M).where(_M.c.id == bindparam("b_id"))
                              .values(flags=bindparam("b_flags"), seen=True, modseq=modseq), updates)
                    s.execute(update(_F).where(_F.c.id == ref.folder_id).values(
                        unseen_count=_F.c.unseen_count - len(updates)))
            # One READ event per message, chained in one batch (audit.record_many).
            audit.record_many(s, [
                audit.Event(audit.READ, ref.actor, ref.address, ref.ref(meta.uid), ip,
                            {"sha256": meta.sha256} if not mark_seen else {"sha256": meta.sha256, "seen": True})
                for meta in metas])
            return changed

        changed = self._write(work) if metas else {}
        if changed:
            self._publish([FolderChanged(ref.mailbox_id, ref.folder_id, "flags")])
            metas = [MessageMeta(m.id, m.uid, changed[m.uid][0], m.size, m.internal_date, changed[m.uid][1],
                                 m.sha256, m.extra, m.imap_cache) if m.uid in changed else m for m in metas]
        if view:
            data = {m.uid: self.view(ref.address, data[m.uid], m.extra) for m in metas}
        return metas, data, set(changed)

    def cache_put(self: Store, entries: dict[int, bytes]) -> None:
        """Keep what IMAP derived from messages' bytes (envelope, structure, size) in
        Message.imap_cache, by message id (a message gone since is skipped)."""
        ids = list(entries)
        for start in range(0, len(ids), _BATCH):
            params = [{"b_id": i, "b_cache": entries[i]} for i in ids[start:start + _BATCH]]

            def work(s: Session, params: list[dict[str, Any]] = params) -> None:
                s.execute(update(_M).where(_M.c.id == bindparam("b_id"))
                          .values(imap_cache=bindparam("b_cache")), params)

            self._write(work)

    # --- changing -------------------------------------------------------------------
    def messages_store(self: Store, ref: FolderRef, uids: Sequence[int], mode: str, flags: Sequence[str],
                       *, unchanged_since: int | None = None, ip: str = ""
                       ) -> tuple[dict[int, tuple[str, int]], list[int]]:
        """STORE: ({uid: (flags, modseq)} for every message found, UIDs refused by
        UNCHANGEDSINCE (RFC 7162 section 3.1.3)). One audit event per command."""
        if not ref.writable:
            raise ReadOnly(f"{ref.actor} may only read {ref.address}.")
        if any(f.lower() == "\\recent" for f in flags):
            raise StoreError("\\Recent cannot be stored.")
        def work(s: Session) -> tuple[dict[int, tuple[str, int]], list[int], int]:
            modseq = self._bump(s, ref.folder_id)
            result: dict[int, tuple[str, int]] = {}
            failed: list[int] = []
            # Rows by what they become: one UPDATE per outcome and 500 rows, not one per row
            # (a mailbox has few distinct flag sets, so STORE 1:* is a few statements).
            groups: dict[tuple[str, bool, bool], list[int]] = {}
            outcome: dict[str, tuple[str, bool, bool]] = {}  # current flags -> new ones
            updated = 0
            unseen_delta = 0
            rows = self._rows_by_uid(s, ref.folder_id, uids, Message.id, Message.uid, Message.flags,
                                     Message.seen, Message.modseq, lock=True)
            for row in rows:
                if unchanged_since is not None and row.modseq > unchanged_since:
                    failed.append(row.uid)
                    continue
                change = outcome.get(row.flags)
                if change is None:
                    new = self.norm_flags(apply_flags(split_flags(row.flags), mode, flags))
                    words = {w.lower() for w in new.split()}
                    change = outcome[row.flags] = (new, "\\seen" in words, "\\deleted" in words)
                new, seen, _deleted = change
                if new == row.flags:
                    result[row.uid] = (row.flags, row.modseq)
                    continue
                if seen != row.seen:
                    unseen_delta += -1 if seen else 1
                groups.setdefault(change, []).append(row.id)
                result[row.uid] = (new, modseq)
                updated += 1
            if updated:
                for (new, seen, deleted), ids in groups.items():
                    for chunk in _chunks(ids):
                        s.execute(update(_M).where(_M.c.id.in_(chunk)).values(
                            flags=new, seen=seen, deleted=deleted, modseq=modseq))
                if unseen_delta:
                    s.execute(update(_F).where(_F.c.id == ref.folder_id).values(
                        unseen_count=_F.c.unseen_count + unseen_delta))
                audit.record(s, audit.FLAGS, actor=ref.actor, mailbox=ref.address, ip=ip,
                             message=f"{ref.name}/{ref.uidvalidity}",
                             details={"uids": _compress(u for u, v in result.items() if v[1] == modseq),
                                      "mode": mode or "=", "flags": list(flags), "modseq": modseq})
            else:
                # Nothing changed: give the mod-sequence back (nobody else saw it: row lock).
                s.execute(update(_F).where(_F.c.id == ref.folder_id).values(highest_modseq=modseq - 1))
            return result, failed, updated

        result, failed, changed = self._write(work)
        if changed:
            self._publish([FolderChanged(ref.mailbox_id, ref.folder_id, "flags")])
        return result, failed

    def messages_expunge(self: Store, ref: FolderRef, uids: Sequence[int] | None = None, *,
                         ip: str = "") -> list[int]:
        """Remove the messages flagged \\Deleted (only those in `uids` if given: UID
        EXPUNGE, RFC 4315 section 2.1); returns the removed UIDs, ascending."""
        if not ref.writable:
            raise ReadOnly(f"{ref.actor} may only read {ref.address}.")

        def work(s: Session) -> list[int]:
            s.execute(select(Mailbox.id).where(Mailbox.id == ref.mailbox_id).with_for_update())
            modseq = self._bump(s, ref.folder_id)
            query = select(Message.id, Message.uid, Message.size, Message.seen).where(
                Message.folder_id == ref.folder_id, Message.deleted.is_(True))
            rows = s.execute(query.order_by(Message.uid)).all()
            if uids is not None:
                allowed = set(uids)
                rows = [r for r in rows if r.uid in allowed]
            if not rows:
                s.execute(update(_F).where(_F.c.id == ref.folder_id).values(highest_modseq=modseq - 1))
                return []
            for chunk in _chunks([r.id for r in rows]):
                s.execute(delete(_M).where(_M.c.id.in_(chunk)))
            self._record_expunged(s, ref.folder_id, [r.uid for r in rows], modseq)
            size = sum(r.size for r in rows)
            unseen = sum(1 for r in rows if not r.seen)
            s.execute(update(_F).where(_F.c.id == ref.folder_id).values(
                message_count=_F.c.message_count - len(rows), unseen_count=_F.c.unseen_count - unseen))
            s.execute(update(_MB).where(_MB.c.id == ref.mailbox_id).values(
                used_bytes=_MB.c.used_bytes - size))
            removed = [r.uid for r in rows]
            audit.record(s, audit.EXPUNGE, actor=ref.actor, mailbox=ref.address, ip=ip,
                         message=f"{ref.name}/{ref.uidvalidity}",
                         details={"uids": _compress(removed), "count": len(removed), "size": size})
            return removed

        removed = self._write(work)
        if removed:
            self._publish([FolderChanged(ref.mailbox_id, ref.folder_id, "expunge")])
        return removed

    @staticmethod
    def _rows_by_uid(s: Session, folder_id: int, uids: Sequence[int], *columns: Any,
                     lock: bool = False) -> list[Any]:
        """Rows of a folder whose UID is in `uids`: an IN list when short, a UID range
        filtered here when long (no statement with thousands of parameters)."""
        wanted = sorted(set(uids))
        if not wanted:
            return []
        what = columns or (Message,)
        if len(wanted) <= _BATCH:
            query = select(*what).where(Message.folder_id == folder_id, Message.uid.in_(wanted))
            filter_set = None
        else:
            query = select(*what).where(Message.folder_id == folder_id,
                                        Message.uid.between(wanted[0], wanted[-1]))
            filter_set = set(wanted)
        if lock:
            query = query.with_for_update()
        if columns:  # plain rows: the ORM's row handling is not needed (STORE 1:* on 100k)
            connection = s.connection() if isinstance(s, Session) else s
            rows = connection.execute(query.order_by(Message.uid)).all()
        else:
            rows = s.execute(query.order_by(Message.uid)).scalars().all()
        if filter_set is not None:
            rows = [r for r in rows if r.uid in filter_set]
        return list(rows)

    def _transfer(self: Store, s: Session, source: Any, target_id: int, rows: Sequence[Message], *,
                  move: bool, target_mailbox_id: int | None = None,
                  source_mailbox_id: int | None = None) -> tuple[list[int], list[int], int]:
        """Copy (or move) `rows` of `source` into folder `target_id`, a fresh UID each.

        Returns (source UIDs, new UIDs, octets) in UID order. The caller holds the locks,
        checked the quota and records the audit event.
        """
        if not rows:
            return [], [], 0
        target = s.execute(select(Folder.uidnext, Folder.highest_modseq).where(Folder.id == target_id)
                           .with_for_update()).one()
        modseq = target.highest_modseq + 1
        next_uid = target.uidnext
        new_uids = list(range(next_uid, next_uid + len(rows)))
        s.execute(insert(_M), [
            {"folder_id": target_id, "uid": new_uid, "blob_sha256": m.blob_sha256, "size": m.size,
             "internal_date": m.internal_date, "flags": m.flags, "seen": m.seen, "deleted": m.deleted,
             "modseq": modseq, "from_addr": m.from_addr, "to_addrs": m.to_addrs, "subject": m.subject,
             "date_header": m.date_header, "message_id": m.message_id,
             "has_attachments": m.has_attachments, "extra": m.extra or {}, "imap_cache": m.imap_cache}
            for new_uid, m in zip(new_uids, rows, strict=True)])
        unseen = sum(1 for m in rows if not m.seen)
        size = sum(m.size for m in rows)
        s.execute(update(_F).where(_F.c.id == target_id).values(
            uidnext=next_uid + len(rows), highest_modseq=modseq,
            message_count=_F.c.message_count + len(rows), unseen_count=_F.c.unseen_count + unseen))
        if move:
            gone_at = self._bump(s, source.id)
            for chunk in _chunks([m.id for m in rows]):
                s.execute(delete(_M).where(_M.c.id.in_(chunk)))
            self._record_expunged(s, source.id, [m.uid for m in rows], gone_at)
            s.execute(update(_F).where(_F.c.id == source.id).values(
                message_count=_F.c.message_count - len(rows), unseen_count=_F.c.unseen_count - unseen))
        if target_mailbox_id is not None and (not move or source_mailbox_id != target_mailbox_id):
            s.execute(update(_MB).where(_MB.c.id == target_mailbox_id).values(
                used_bytes=_MB.c.used_bytes + size))
            if move:
                s.execute(update(_MB).where(_MB.c.id == source_mailbox_id).values(
                    used_bytes=_MB.c.used_bytes - size))
        return [m.uid for m in rows], new_uids, size

    @staticmethod
    def _record_expunged(s: Session, folder_id: int, uids: Sequence[int], modseq: int) -> None:
        """In the transaction of a removal: each UID with its mod-sequence (QRESYNC)."""
        if uids:
            s.execute(insert(_X), [{"folder_id": folder_id, "uid": uid, "modseq": modseq} for uid in uids])

    def expunged_since(self: Store, ref: FolderRef, modseq: int,
                       ranges: Sequence[tuple[int, int]] | None = None) -> list[int]:
        """UIDs removed from the folder with a mod-sequence above `modseq` (RFC 7162
        3.2.5 VANISHED (EARLIER)), within `ranges` if given, ascending."""
        with self.db.read() as s:
            rows = s.execute(select(ExpungedUid.uid).where(
                ExpungedUid.folder_id == ref.folder_id, ExpungedUid.modseq > modseq)
                .order_by(ExpungedUid.uid)).scalars().all()
        return [int(u) for u in rows if ranges is None or contains(ranges, u)]

    def messages_copy(self: Store, ref: FolderRef, uids: Sequence[int], address: str, name: str, *,
                      move: bool = False, ip: str = "") -> tuple[int, list[int], list[int]]:
        """COPY/MOVE (RFC 3501 6.4.7, RFC 6851) into a folder of a mailbox the actor may
        write: (target UIDVALIDITY, source UIDs, target UIDs) for UIDPLUS COPYUID."""
        if move and not ref.writable:
            raise ReadOnly(f"{ref.actor} may only read {ref.address}.")

        def work(s: Session) -> tuple[int, list[int], list[int], list[FolderChanged]]:
            target_mailbox, target_box, rights = self._access(s, ref.principal, address)
            if rights not in WRITE_RIGHTS:
                raise ReadOnly(f"{ref.actor} may only read {target_box}.")
            # Lock mailboxes in address order, as deliveries do.
            locked = {}
            for mailbox_id, _box in sorted({(ref.mailbox_id, ref.address), (target_mailbox, target_box)},
                                          key=lambda item: item[1]):
                locked[mailbox_id] = s.execute(
                    select(Mailbox.used_bytes, Mailbox.quota_bytes).where(Mailbox.id == mailbox_id)
                    .with_for_update()).one()
            target = self._folder_row(s, target_mailbox, name, lock=True)
            source = self._folder_row(s, ref.mailbox_id, ref.name, lock=True)
            if source.id != ref.folder_id:
                raise FolderNotFound("the selected folder no longer exists.")
            # MOVE into the folder itself (RFC 6851 allows it; Dovecot does it): new UIDs,
            # the old ones expunged, like any move.
            rows = self._rows_by_uid(s, source.id, uids, lock=move)
            if not move or target_mailbox != ref.mailbox_id:
                size = sum(m.size for m in rows)
                used, quota = locked[target_mailbox]
                if size and used + size > quota:
                    raise QuotaExceeded(f"mailbox {target_box} is over its quota.")
            src, dst, size = self._transfer(s, source, target.id, rows, move=move,
                                            target_mailbox_id=target_mailbox,
                                            source_mailbox_id=ref.mailbox_id)
            if src:
                audit.record(s, audit.MOVE if move else audit.COPY, actor=ref.actor, mailbox=ref.address,
                             ip=ip, message=f"{ref.name}/{ref.uidvalidity}",
                             details={"uids": _compress(src), "to_mailbox": target_box, "to_folder": target.name,
                                      "to_uidvalidity": target.uidvalidity, "to_uids": _compress(dst),
                                      "size": size})
            events = [FolderChanged(target_mailbox, target.id, "new")]
            if move:
                events.append(FolderChanged(ref.mailbox_id, ref.folder_id, "expunge"))
            return target.uidvalidity, src, dst, events

        uidvalidity, src, dst, events = self._write(work)
        if src:
            self._publish(events)
        return uidvalidity, src, dst

    def messages_append(self: Store, actor: Actor | str, address: str, name: str,
                        messages: Sequence[tuple[bytes, Sequence[str], datetime | None]], *,
                        ip: str = "", cache: Callable[[bytes], bytes | None] | None = None
                        ) -> tuple[int, list[int]]:
        """APPEND / MULTIAPPEND (RFC 3502): all messages or none; durable before it returns
        (blobs fsynced, then one transaction). `cache` may precompute Message.imap_cache
        from the bytes. Returns (UIDVALIDITY, new UIDs) for APPENDUID."""
        if not messages:
            raise StoreError("nothing to append.")
        total = sum(len(raw) for raw, _, _ in messages)
        with self.db.read() as s:
            mailbox_id, box, rights = self._access(s, actor, address)
            if rights not in WRITE_RIGHTS:
                raise ReadOnly(f"{as_actor(actor).name} may only read {box}.")
            self._folder_row(s, mailbox_id, name)
            used, quota = s.execute(select(Mailbox.used_bytes, Mailbox.quota_bytes)
                                    .where(Mailbox.id == mailbox_id)).one()
            if used + total > quota:
                raise QuotaExceeded(f"mailbox {box} is over its quota.")
        prepared = []
        for raw, flags, when in messages:
            entry = cache(raw) if cache is not None else None
            prepared.append((self.blobs.put(raw), len(raw), summarize(raw), self.norm_flags(flags),
                             when or datetime.now(UTC), entry))

        def work(s: Session) -> tuple[int, list[int], FolderChanged]:
            used, quota = s.execute(select(Mailbox.used_bytes, Mailbox.quota_bytes)
                                    .where(Mailbox.id == mailbox_id).with_for_update()).one()
            if used + total > quota:
                raise QuotaExceeded(f"mailbox {box} is over its quota.")
            folder = self._folder_row(s, mailbox_id, name, lock=True)
            modseq = folder.highest_modseq + 1
            uids = list(range(folder.uidnext, folder.uidnext + len(prepared)))
            rows = []
            unseen = 0
            for uid, (sha, size, summary, flags, when, entry) in zip(uids, prepared, strict=True):
                words = {w.lower() for w in flags.split()}
                unseen += "\\seen" not in words
                rows.append({"folder_id": folder.id, "uid": uid, "blob_sha256": sha, "size": size,
                             "internal_date": when, "flags": flags, "seen": "\\seen" in words,
                             "deleted": "\\deleted" in words, "modseq": modseq,
                             "from_addr": summary.from_addr, "to_addrs": summary.to_addrs,
                             "subject": summary.subject, "date_header": summary.date,
                             "message_id": summary.message_id, "has_attachments": summary.has_attachments,
                             "extra": {}, "imap_cache": entry})
            s.execute(insert(_M), rows)
            s.execute(update(_F).where(_F.c.id == folder.id).values(
                uidnext=uids[-1] + 1, highest_modseq=modseq, message_count=_F.c.message_count + len(rows),
                unseen_count=_F.c.unseen_count + unseen))
            s.execute(update(_MB).where(_MB.c.id == mailbox_id).values(
                used_bytes=_MB.c.used_bytes + total))
            who = as_actor(actor).audit_name
            audit.record_many(s, [
                audit.Event(audit.APPEND, who, box, f"{folder.name}/{folder.uidvalidity}/{uid}", ip,
                            {"size": size, "sha256": sha})
                for uid, (sha, size, *_rest) in zip(uids, prepared, strict=True)])
            return folder.uidvalidity, uids, FolderChanged(mailbox_id, folder.id, "new")

        uidvalidity, uids, event = self._write(work)
        self._publish([event])
        return uidvalidity, uids


def _chunks(values: Sequence[Any], size: int = _BATCH) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def _compress(uids: Iterable[int]) -> str:
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges_of(uids))


__all__ = ["DELIMITER", "FolderInfo", "FolderRef", "FolderState", "MessageMeta", "MessageOps", "Opened",
           "ReadOnly", "apply_flags", "check_folder_name", "normalize_folder_name"]
