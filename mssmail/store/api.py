"""The reader/writer API every front end calls: IMAP, the webmail, connectors, the CLI.

One entry: `open_folder(actor, address, name)` checks the actor's rights on the mailbox
(owner, delegate `read` or `full`, administrator, system component: see
`mssmail.store.actors`) and hands out a `FolderRef`; every other call takes the ref and
stays within its rights. What reads a message's content is audited before the content
is returned (`message_view`, `message_part`, `search`); what changes messages is audited
in the transaction of the change (`set_flags`, `move`, `copy`, `expunge`, `append`).
Listing metadata (`message_page`) is not audited, as for IMAP ENVELOPE.

The IMAP-shaped methods of `MessageOps` (`folder_open`, `messages_meta`,
`messages_read`, `messages_store`...) are the lower layer: IMAP calls them directly
where it needs their batch shape for speed; they take the same refs and do the same
checks. No front end reads the ORM or the blob files itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mssmail import audit
from mssmail.store import mimeview, query
from mssmail.store.actors import Actor, ActorKind, as_actor
from mssmail.store.driversql import driver_for
from mssmail.store.errors import FolderNotFound, StoreError
from mssmail.store.messages import FolderInfo, FolderRef, ReadOnly, normalize_folder_name
from mssmail.store.mimeview import PartInfo
from mssmail.store.models import Delegation, Folder, Mailbox, Message, Subscription
from mssmail.store.query import Query

if TYPE_CHECKING:
    from mssmail.store.service import Store

__all__ = ["Actor", "ActorKind", "Appended", "FolderHits", "FolderRef", "MessageAPI", "MessageNotFound", "MessagePart",
           "MessageSummary", "MessageView", "Order", "Page", "PartInfo", "Protection", "SearchResult",
           "Transfer", "ZipStream", "as_actor"]

Order = Literal["arrival", "date", "from", "subject", "size"]
ORDERS: tuple[Order, ...] = ("arrival", "date", "from", "subject", "size")
MAX_PAGE = 500


class MessageNotFound(StoreError):
    pass


class BadCursor(StoreError):
    pass


@dataclass(frozen=True)
class Protection:
    """What crypto found on reception (`extra["signature_report"]`): signed, encrypted,
    the overall verdict ("valid", "untrusted", "tampered"... None when not looked at)."""

    signed: bool = False
    encrypted: bool = False
    verdict: str | None = None
    decrypted: bool | None = None
    # Who signed (certificate subject, else address) and the verdict in French words
    # (crypto.report's summary): the webmail's "Ce message a été signé par : ...".
    signers: tuple[str, ...] = ()
    summary: str = ""

    @classmethod
    def of(cls, extra: dict[str, Any] | None) -> Protection:
        report = (extra or {}).get("signature_report")
        if not isinstance(report, dict):
            return cls()
        found = report.get("signers")
        signers: list[Any] = found if isinstance(found, list) else []
        names = tuple(str(s.get("subject") or s.get("email") or "") for s in signers if isinstance(s, dict))
        return cls(bool(signers), bool(report.get("encrypted")),
                   report.get("verdict"), report.get("decrypted"), names, str(report.get("summary") or ""))


_NO_PROTECTION = Protection()  # the verdict of a message crypto never looked at (most rows)


def _document_kinds(extra: dict[str, Any] | None, flags: Sequence[str]) -> tuple[str, ...]:
    docs = (extra or {}).get("documents")
    if not docs and not any(f.startswith("$") for f in flags):  # most rows: nothing to look at
        return ()
    kinds: list[str] = []
    if isinstance(docs, list):
        kinds += [str(d.get("kind", "")) for d in docs if isinstance(d, dict) and d.get("kind")]
    lowered = {f.lower() for f in flags}
    kinds += [k for k, flag in (("hprim", "$hprim"), ("dlu", "$dlu")) if flag in lowered]
    return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True)
class MessageSummary:
    """One row of a folder listing."""

    uid: int
    flags: tuple[str, ...]
    size: int
    internal_date: datetime
    date: datetime | None  # the Date: header
    from_addr: str
    to_addrs: str
    subject: str
    has_attachments: bool
    protection: Protection
    documents: tuple[str, ...]  # kinds of health documents found: "hprim_net", "dlu"...
    message_id: str  # the Message-ID header
    sha256: str  # digest of the stored bytes (content-addressed blob)

    @property
    def seen(self) -> bool:
        return any(f.lower() == "\\seen" for f in self.flags)

    @property
    def hprim(self) -> bool:
        return any(k.lower().startswith("hprim") for k in self.documents)

    @property
    def dlu(self) -> bool:
        return any(k.lower().startswith("dlu") for k in self.documents)


@dataclass(frozen=True)
class Page:
    """A page of a listing; `next_cursor` (None on the last page) asks for the next one.
    In arrival order, newest first, `next_before_uid` is the same thing as a UID
    (`?avant=UID` in the webmail)."""

    items: tuple[MessageSummary, ...]
    next_cursor: str | None
    next_before_uid: int | None


@dataclass(frozen=True)
class MessageView:
    """A message as its reader sees it: decrypted where the server holds the reader's
    key (the store's view filters), with its MIME parts."""

    summary: MessageSummary
    raw: bytes
    headers: tuple[tuple[str, str], ...]  # decoded (RFC 2047), in order
    text: str | None  # the first text/plain part that is not an attachment
    html: str | None  # the first text/html part that is not an attachment
    parts: tuple[PartInfo, ...]
    marked_seen: bool
    # What could not be read as written (broken structure, bad base64, unknown
    # charset: `mimeview.structure_defects`/`text_defects`); the reader is told and
    # offered the .eml. Empty for a well-formed message.
    defects: tuple[str, ...] = ()

    @property
    def attachments(self) -> tuple[PartInfo, ...]:
        return tuple(p for p in self.parts if p.is_attachment)


@dataclass(frozen=True)
class MessagePart:
    """One part of a message, decoded as it is read: iterate for pieces of about
    `transfer.STREAM_CHUNK` octets (a download streams them), or take `data` whole.
    It holds the message's bytes once (decrypted when the server holds the key), never a
    second full copy of the decoded part."""

    info: PartInfo
    entity: mimeview.Entity

    def __iter__(self) -> Iterator[bytes]:
        return query.iter_decoded(self.entity)

    @property
    def data(self) -> bytes:  # transfer encoding undone
        return query.decoded_body(self.entity)


class ZipStream:
    """"Télécharger toutes les pièces jointes": the ZIP written as it is read (entries
    with data descriptors, APPNOTE 4.3.9), so its size in memory is one piece, not the
    archive. Iterable once per instance; the audit event was written before it exists."""

    def __init__(self, entries: Sequence[tuple[str, MessagePart]]) -> None:
        self.entries = entries

    def __iter__(self) -> Iterator[bytes]:
        sink = _Drain()
        now = datetime.now().timetuple()[:6]
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, part in self.entries:
                info = zipfile.ZipInfo(name, date_time=now)
                info.compress_type = zipfile.ZIP_STORED if _compressed(part.info.content_type) \
                    else zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=part.entity.body_size > (1 << 31)) as entry:
                    for piece in part:
                        entry.write(piece)
                        yield from sink.take()
                yield from sink.take()
        yield from sink.take()


# Formats that are compressed already: deflating them again costs the CPU of the whole
# file (a 10 MB PDF: most of the ZIP's time, measured in bench/webmail_bench.py) and
# saves nothing, so they are stored (APPNOTE 4.4.5, method 0).
_COMPRESSED_TYPES = frozenset({
    "application/pdf", "application/zip", "application/gzip", "application/x-7z-compressed",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
})


def _compressed(content_type: str) -> bool:
    base = content_type.split(";")[0].strip().lower()
    return base in _COMPRESSED_TYPES or base.startswith(("image/jpeg", "image/png", "image/gif", "image/webp",
                                                         "video/", "audio/"))


class _Drain(io.RawIOBase):
    """A write-only, unseekable file that hands out what was written to it."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        piece = bytes(data)
        self.pieces.append(piece)
        self.position += len(piece)
        return len(piece)

    def tell(self) -> int:  # zipfile asks where entries start, even on an unseekable file
        return self.position

    def take(self) -> Iterator[bytes]:
        pieces, self.pieces = self.pieces, []
        if pieces:
            yield b"".join(pieces)


@dataclass(frozen=True)
class Transfer:
    """Result of a copy or move: the target folder's UIDVALIDITY and the UIDs, pairwise."""

    uidvalidity: int
    source_uids: tuple[int, ...]
    target_uids: tuple[int, ...]


@dataclass(frozen=True)
class Appended:
    uidvalidity: int
    uids: tuple[int, ...]


@dataclass(frozen=True)
class FolderHits:
    """One folder's answer to a mailbox-wide search: UIDs ascending."""

    ref: FolderRef
    uids: tuple[int, ...]


@dataclass(frozen=True)
class SearchResult:
    """Matching UIDs (ascending), how many messages were looked at and read, and the
    highest mod-sequence among the matches (when the query used MODSEQ)."""

    # A tuple, or the index's `query.JoinedUids` as it came when it is the whole answer.
    uids: Sequence[int]
    scanned: int
    read: int
    highest_modseq: int | None


_SUMMARY_COLUMNS = (Message.uid, Message.flags, Message.size, Message.internal_date, Message.date_header,
                    Message.from_addr, Message.to_addrs, Message.subject, Message.has_attachments,
                    Message.extra, Message.message_id, Message.blob_sha256)


def _summary(row: Any) -> MessageSummary:
    # Unpacked by position: a folder page builds 50 of these, and a Row's attribute
    # lookups were a third of `message_page`'s time (cProfile, 20,000-message box).
    uid, flags_text, size, internal_date, date_header, from_addr, to_addrs, subject, attachments, extra, \
        message_id, sha256 = row[:12]
    flags = tuple(flags_text.split()) if flags_text else ()
    extra = extra or {}
    return MessageSummary(uid, flags, size, internal_date, date_header, from_addr or "", to_addrs or "",
                          subject or "", bool(attachments), Protection.of(extra) if extra else _NO_PROTECTION,
                          _document_kinds(extra, flags), message_id or "", sha256)


# The folder page's query, built once: newest first, optionally before a UID. Building a
# `select` and its cache key on every page cost about as much as running it.
_ARRIVAL_PAGE = select(*_SUMMARY_COLUMNS).where(Message.folder_id == bindparam("folder_id")) \
    .order_by(Message.uid.desc()).limit(bindparam("limit"))
_ARRIVAL_PAGE_BEFORE = select(*_SUMMARY_COLUMNS).where(Message.folder_id == bindparam("folder_id"),
                                                        Message.uid < bindparam("before")) \
    .order_by(Message.uid.desc()).limit(bindparam("limit"))
_FOLDERS_OF = select(Folder.name, Folder.special_use, Folder.message_count, Folder.unseen_count, Folder.uidnext,
                     Folder.uidvalidity, Folder.highest_modseq, Folder.id).where(
    Folder.mailbox_id == bindparam("mailbox_id")).order_by(Folder.name)
_SUBSCRIBED = select(Subscription.folder).where(Subscription.subscriber_id == bindparam("subscriber"),
                                                Subscription.address == bindparam("address"))
_QUOTA = select(Mailbox.used_bytes, Mailbox.quota_bytes).where(Mailbox.id == bindparam("mailbox_id"))
_MAILBOX_ID = select(Mailbox.id).where(Mailbox.address == bindparam("address"))
_DELEGATED = select(Mailbox.address, Delegation.rights).join(Delegation, Delegation.mailbox_id == Mailbox.id) \
    .where(Delegation.delegate_id == bindparam("user_id"), Mailbox.disabled.is_(False)).order_by(Mailbox.address)


def _select_rows(connection: Connection, statement: Any, params: dict[str, Any]) -> Sequence[Any]:
    """The rows of one of the statements above, on the DBAPI cursor where the dialect
    allows (`driversql.Driver.select_rows`: Core's execute and Row objects were a fifth
    of a folder page's CPU), else through Core. Tuples either way, read by position."""
    driver = driver_for(connection)
    if driver is None:
        return connection.execute(statement, params).all()
    return driver.select_rows(connection, statement, params)


@dataclass(frozen=True)
class Sidebar:
    """What every webmail page shows beside its content: the mailbox's folders (with
    unread counts), its quota, and the mailboxes the user may open (own, delegated)."""

    folders: tuple[FolderInfo, ...]
    used: int
    limit: int
    boxes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FolderView:
    """A folder page: the opened folder, its page of rows, and the sidebar."""

    ref: FolderRef
    page: Page
    sidebar: Sidebar


def _sort_key(order: Order) -> ColumnElement[Any] | None:
    if order == "arrival":
        return None
    if order == "date":
        return func.coalesce(Message.date_header, Message.internal_date)
    if order == "from":
        return Message.from_addr.expression
    if order == "subject":
        return Message.subject.expression
    return Message.size.expression


def _encode_cursor(order: Order, value: Any, uid: int) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(UTC).isoformat()
    text = json.dumps([order, value, uid], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(order: Order, cursor: str) -> tuple[Any, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, value, uid = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if kind != order or not isinstance(uid, int):
            raise ValueError
        if order == "date":
            value = datetime.fromisoformat(value)
        elif (order == "size" and not isinstance(value, int)) or (order in ("from", "subject") and not isinstance(value, str)):
            raise ValueError
        return value, uid
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("this page link is not valid for this listing.") from None


def _zip_name(info: PartInfo, used: set[str]) -> str:
    """A safe, unique entry name: the file name without any directory part (no path
    leaves the archive's root when unpacked), else one made from the part number."""
    base = info.filename.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".") or f"partie-{info.part_id}"
    base = "".join(c for c in base if c.isprintable())[:150] or f"partie-{info.part_id}"
    name, counter = base, 1
    while name.lower() in used:
        counter += 1
        stem, dot, ext = base.rpartition(".")
        name = f"{stem} ({counter}).{ext}" if dot and stem else f"{base} ({counter})"
    used.add(name.lower())
    return name


class MessageAPI:
    """The front ends' calls (mixed into `Store`)."""

    def open_folder(self: Store, actor: Actor | str, address: str, name: str) -> FolderRef:
        """The folder `name` of mailbox `address` for `actor`, or AccessDenied /
        MailboxNotFound / FolderNotFound. An administrator opening a mailbox is an
        audit event (`admin`, op `folder.open`): even its listing shows who wrote to
        whom about what, and the owner is not the one looking."""
        ref = self.folder_open(actor, address, name, uids=False).ref
        if ref.principal.kind is ActorKind.ADMIN:
            def work(s: Session) -> None:
                audit.record(s, audit.ADMIN, actor=ref.actor, mailbox=ref.address,
                             message=f"{ref.name}/{ref.uidvalidity}",
                             details={"op": "folder.open", "folder": ref.name})

            self._write(work)
        return ref

    def message_page(self: Store, ref: FolderRef, *, order: Order = "arrival", descending: bool = True,
                     limit: int = 50, cursor: str | None = None,
                     before_uid: int | None = None) -> Page:
        """A page of the folder's messages, keyset-paginated on (sort key, UID): page
        1,000 costs what page 1 does, and a message arriving between two pages neither
        repeats nor hides one. `before_uid` is the cursor of arrival order, descending.
        Not audited: metadata, as IMAP ENVELOPE."""
        if before_uid is not None and (order != "arrival" or not descending):
            raise ValueError("before_uid pages arrival order, newest first.")
        with self.db.engine.connect() as connection:
            return self._message_page(connection, ref, order=order, descending=descending, limit=limit,
                                      cursor=cursor, before_uid=before_uid)

    def _message_page(self: Store, connection: Connection, ref: FolderRef, *, order: Order = "arrival",
                      descending: bool = True, limit: int = 50, cursor: str | None = None,
                      before_uid: int | None = None) -> Page:
        if order not in ORDERS:
            raise ValueError(f"order is one of {', '.join(ORDERS)}.")
        limit = max(1, min(limit, MAX_PAGE))
        if order == "arrival" and descending and cursor is None:  # the folder page: prepared statements
            params = {"folder_id": ref.folder_id, "limit": limit + 1}
            if before_uid is None:
                rows = _select_rows(connection, _ARRIVAL_PAGE, params)
            else:
                rows = _select_rows(connection, _ARRIVAL_PAGE_BEFORE, {**params, "before": before_uid})
            more = len(rows) > limit
            rows = rows[:limit]
            items = tuple(_summary(r) for r in rows)
            if more and rows:
                last_uid = rows[-1][0]
                return Page(items, _encode_cursor(order, None, last_uid), last_uid)
            return Page(items, None, None)
        key = _sort_key(order)
        uid_col = Message.uid
        query_ = select(*_SUMMARY_COLUMNS).where(Message.folder_id == ref.folder_id)
        if key is not None:
            query_ = query_.add_columns(key.label("sort_key"))
        after: tuple[Any, int] | None = None
        if before_uid is not None:
            if order != "arrival" or not descending:
                raise ValueError("before_uid pages arrival order, newest first.")
            query_ = query_.where(uid_col < before_uid)
        elif cursor is not None:
            after = _decode_cursor(order, cursor)
        if after is not None:
            value, uid = after
            if key is None:
                query_ = query_.where(uid_col < uid if descending else uid_col > uid)
            elif descending:
                query_ = query_.where(or_(key < value, and_(key == value, uid_col < uid)))
            else:
                query_ = query_.where(or_(key > value, and_(key == value, uid_col > uid)))
        if key is not None:
            query_ = query_.order_by(key.desc() if descending else key.asc())
        query_ = query_.order_by(uid_col.desc() if descending else uid_col.asc()).limit(limit + 1)
        rows = connection.execute(query_).all()
        more = len(rows) > limit
        rows = rows[:limit]
        items = tuple(_summary(r) for r in rows)
        next_cursor = next_before = None
        if more and rows:
            last = rows[-1]
            next_cursor = _encode_cursor(order, None if key is None else last.sort_key, last.uid)
            if order == "arrival" and descending:
                next_before = last.uid
        return Page(items, next_cursor, next_before)

    def _sidebar_of(self: Store, connection: Connection, actor: Actor | str, mailbox_id: int,
                    box: str) -> tuple[Sidebar, dict[str, int]]:
        """The sidebar on an open connection (see `sidebar`), `box` already checked, and
        the folders' ids by name."""
        who = as_actor(actor)
        rows = _select_rows(connection, _FOLDERS_OF, {"mailbox_id": mailbox_id})
        owner = who.name if who.kind is ActorKind.USER else box
        subscriber = mailbox_id if owner == box else connection.execute(_MAILBOX_ID, {"address": owner}).scalar()
        subscribed = {r[0] for r in _select_rows(connection, _SUBSCRIBED, {"subscriber": subscriber, "address": box})}
        used, quota = _select_rows(connection, _QUOTA, {"mailbox_id": mailbox_id})[0]
        boxes: list[tuple[str, str]] = []
        if who.kind is ActorKind.USER:
            user_id = mailbox_id if who.name == box else connection.execute(
                _MAILBOX_ID, {"address": who.name}).scalar()
            if user_id is not None:
                boxes.append((who.name, "owner"))
                boxes.extend((r[0], r[1]) for r in _select_rows(connection, _DELEGATED, {"user_id": user_id}))
        folders = tuple(FolderInfo(r[0], r[1], r[0] in subscribed, *r[2:7]) for r in rows)
        return Sidebar(folders, int(used), int(quota), tuple(boxes)), {r[0]: r[7] for r in rows}

    def sidebar(self: Store, actor: Actor | str, address: str) -> Sidebar:
        """What every webmail page shows beside its content, in one connection: the
        folders of `address` (as `folder_list`), its quota (as `quota_of`) and the
        mailboxes the actor may open (as `accessible_mailboxes`). AccessDenied /
        MailboxNotFound as `folder_list`."""
        with self.db.engine.connect() as connection:
            mailbox_id, box, _rights = self._access(connection, actor, address)
            return self._sidebar_of(connection, actor, mailbox_id, box)[0]

    def folder_view(self: Store, actor: Actor | str, address: str, name: str, *, limit: int = 50,
                    before_uid: int | None = None, connection: Connection | None = None) -> FolderView:
        """A webmail folder page in one call and one connection (`connection` when given,
        still open afterwards): `open_folder`, then `message_page` (arrival order, newest
        first, before `before_uid`), then `sidebar`. The same checks, errors and audit as
        those calls (an administrator opening a mailbox is still an `admin` event)."""
        who = as_actor(actor)
        opened = contextlib.nullcontext(connection) if connection is not None else self.db.engine.connect()
        with opened as connection:
            mailbox_id, box, rights = self._access(connection, actor, address)
            sidebar, ids = self._sidebar_of(connection, actor, mailbox_id, box)
            wanted = normalize_folder_name(name)
            found = next((f for f in sidebar.folders if f.name == wanted), None)
            if found is None:
                raise FolderNotFound(f"no folder {name!r}.")
            ref = FolderRef(who.audit_name, box, mailbox_id, ids[wanted], found.name, found.uidvalidity, rights, who)
            page = self._message_page(connection, ref, limit=limit, before_uid=before_uid)
        if who.kind is ActorKind.ADMIN:
            def work(s: Session) -> None:
                audit.record(s, audit.ADMIN, actor=ref.actor, mailbox=ref.address,
                             message=f"{ref.name}/{ref.uidvalidity}",
                             details={"op": "folder.open", "folder": ref.name})

            self._write(work)
        return FolderView(ref, page, sidebar)

    def message_summary(self: Store, ref: FolderRef, uid: int) -> MessageSummary:
        """One message's listing row (not audited: metadata)."""
        with self.db.engine.connect() as connection:
            row = connection.execute(select(*_SUMMARY_COLUMNS).where(
                Message.folder_id == ref.folder_id, Message.uid == uid)).first()
        if row is None:
            raise MessageNotFound(f"no message {uid} in {ref.name}.")
        return _summary(row)

    def message_view(self: Store, ref: FolderRef, uid: int, *, mark_seen: bool = True,
                     ip: str = "") -> MessageView:
        """Read one message: audited (`read`), \\Seen set when asked and the ref may
        write, decrypted where the server holds the key, with its MIME parts."""
        summary = self.message_summary(ref, uid)
        metas, data, marked = self.messages_read(ref, [uid], mark_seen=mark_seen, ip=ip, with_cache=False)
        if not metas:
            raise MessageNotFound(f"no message {uid} in {ref.name}.")
        raw = data[uid]
        if marked:
            summary = MessageSummary(**{**summary.__dict__, "flags": tuple(metas[0].flags.split())})
        tree = mimeview.parse_tree(raw)
        headers = tuple((name, query.decode_words(str(value))) for name, value in tree.headers.items())
        parts = tuple(mimeview.list_parts(tree))
        text = html = None
        defects = mimeview.structure_defects(tree)
        for part in parts:
            if part.is_attachment or part.content_type not in ("text/plain", "text/html"):
                continue
            entity = mimeview.find_part(tree, mimeview.parse_part_id(part.part_id))
            if entity is None:
                continue
            if part.content_type == "text/plain" and text is None:
                text = query.decoded_text(entity)
            elif part.content_type == "text/html" and html is None:
                html = query.decoded_text(entity)
            else:
                continue
            defects += [d for d in mimeview.text_defects(entity) if d not in defects]
        return MessageView(summary, raw, headers, text, html, parts, uid in marked, tuple(defects))

    def message_raw(self: Store, ref: FolderRef, uid: int, *, ip: str = "",
                    op: str = "eml") -> tuple[MessageSummary, bytes]:
        """The whole message as its reader sees it (decrypted where the server holds
        the key, as IMAP's BODY[] gives it): "Télécharger le message (.eml)". Audited
        as a `read` with `details.op` before the bytes are returned; \\Seen unchanged."""
        summary = self.message_summary(ref, uid)
        metas = self.messages_meta(ref, [(uid, uid)], with_extra=True)
        if not metas:
            raise MessageNotFound(f"no message {uid} in {ref.name}.")
        meta = metas[0]
        raw = self.view(ref.address, self.blobs.read(meta.sha256), meta.extra)

        def work(s: Session) -> None:
            audit.record(s, audit.READ, actor=ref.actor, mailbox=ref.address, ip=ip, message=ref.ref(uid),
                         details={"sha256": meta.sha256, "op": op})

        self._write(work)
        return summary, raw

    def message_signature_report(self: Store, ref: FolderRef, uid: int, *,
                                 ip: str = "") -> tuple[MessageSummary, dict[str, Any] | None]:
        """What crypto found when the message arrived (`extra["signature_report"]`,
        see crypto/report.py), None for a message nobody signed or encrypted. Audited
        as a `read` (`details.op = "report"`): it names the signer and the parts."""
        summary = self.message_summary(ref, uid)
        metas = self.messages_meta(ref, [(uid, uid)], with_extra=True)
        if not metas:
            raise MessageNotFound(f"no message {uid} in {ref.name}.")
        meta = metas[0]
        found = (meta.extra or {}).get("signature_report")

        def work(s: Session) -> None:
            audit.record(s, audit.READ, actor=ref.actor, mailbox=ref.address, ip=ip, message=ref.ref(uid),
                         details={"sha256": meta.sha256, "op": "report"})

        self._write(work)
        return summary, dict(found) if isinstance(found, dict) else None

    def message_part(self: Store, ref: FolderRef, uid: int, part_id: str, *, ip: str = "") -> MessagePart:
        """One part (an attachment), decoded as it is read: audited as a `read` with
        `details.part` before the part is handed out."""
        try:
            numbers = mimeview.parse_part_id(part_id)
        except ValueError as exc:
            raise MessageNotFound(str(exc)) from None
        sha256, tree = self._message_tree(ref, uid)
        entity = mimeview.find_part(tree, numbers)
        if entity is None:
            raise MessageNotFound(f"message {uid} has no part {part_id}.")
        info = next((p for p in mimeview.list_parts(tree) if p.part_id == part_id), None)
        if info is None:  # a container (multipart) part: described as itself
            info = PartInfo(part_id, entity.content_type, "", entity.body_size, "", "", False)

        def work(s: Session) -> None:
            audit.record(s, audit.READ, actor=ref.actor, mailbox=ref.address, ip=ip, message=ref.ref(uid),
                         details={"sha256": sha256, "part": part_id})

        self._write(work)
        return MessagePart(info, entity)

    def message_attachments_zip(self: Store, ref: FolderRef, uid: int, *, ip: str = "") -> ZipStream:
        """Every attachment of a message in one ZIP ("Télécharger toutes les pièces
        jointes"), written as it is read: one audited `read` with `details.op = "zip"` and
        the parts taken, before the first byte. `b"".join(...)` gives the whole archive."""
        sha256, tree = self._message_tree(ref, uid)
        attachments = [p for p in mimeview.list_parts(tree) if p.is_attachment]
        entries: list[tuple[str, MessagePart]] = []
        used: set[str] = set()
        for info in attachments:
            entity = mimeview.find_part(tree, mimeview.parse_part_id(info.part_id))
            if entity is not None:
                entries.append((_zip_name(info, used), MessagePart(info, entity)))

        def work(s: Session) -> None:
            audit.record(s, audit.READ, actor=ref.actor, mailbox=ref.address, ip=ip, message=ref.ref(uid),
                         details={"sha256": sha256, "op": "zip",
                                  "parts": [p.part_id for p in attachments]})

        self._write(work)
        return ZipStream(entries)

    def _message_tree(self: Store, ref: FolderRef, uid: int) -> tuple[str, mimeview.Entity]:
        """(blob digest, MIME tree of the bytes the reader gets): the message as stored,
        through the view filters (decrypted where the server holds the key)."""
        metas = self.messages_meta(ref, [(uid, uid)], with_extra=True)
        if not metas:
            raise MessageNotFound(f"no message {uid} in {ref.name}.")
        meta = metas[0]
        return meta.sha256, mimeview.parse_tree(self.view(ref.address, self.blobs.read(meta.sha256), meta.extra))

    def set_flags(self: Store, ref: FolderRef, uids: Sequence[int], mode: Literal["+", "-", ""],
                  flags: Sequence[str], *, ip: str = "") -> dict[int, tuple[str, int]]:
        """Add (`+`), remove (`-`) or replace (`""`) flags: {uid: (flags, modseq)}."""
        result, _failed = self.messages_store(ref, uids, mode, flags, ip=ip)
        return result

    def copy(self: Store, ref: FolderRef, uids: Sequence[int], address: str, name: str, *,
             ip: str = "") -> Transfer:
        """Copy into a folder of a mailbox the actor may write (quota checked)."""
        uidvalidity, src, dst = self.messages_copy(ref, uids, address, name, ip=ip)
        return Transfer(uidvalidity, tuple(src), tuple(dst))

    def move(self: Store, ref: FolderRef, uids: Sequence[int], address: str, name: str, *,
             ip: str = "") -> Transfer:
        uidvalidity, src, dst = self.messages_copy(ref, uids, address, name, move=True, ip=ip)
        return Transfer(uidvalidity, tuple(src), tuple(dst))

    def expunge(self: Store, ref: FolderRef, uids: Sequence[int] | None = None, *,
                ip: str = "") -> list[int]:
        """Remove the messages flagged \\Deleted (only among `uids` if given)."""
        return self.messages_expunge(ref, uids, ip=ip)

    def append(self: Store, ref: FolderRef, raw: bytes, *, flags: Iterable[str] = (),
               internal_date: datetime | None = None, ip: str = "") -> Appended:
        """Store a message into the ref's folder (a draft, a filed copy): durable before
        it returns, audited (`append`); the ref must be writable."""
        if not ref.writable:
            raise ReadOnly(f"{ref.principal.name} may only read {ref.address}.")
        uidvalidity, uids = self.messages_append(ref.principal, ref.address, ref.name,
                                                 [(raw, list(flags), internal_date)], ip=ip)
        return Appended(uidvalidity, tuple(uids))

    def search(self: Store, ref: FolderRef, criteria: Query, *, ip: str = "",
               within: Iterable[int] | None = None) -> SearchResult:
        """UIDs of the folder's messages that match `criteria` (only among `within`
        when given: IMAP passes the UIDs its session knows). A search that looks into
        content (text, patients, or headers the summary lacks) is one `search` audit
        event, recorded before the answer is returned."""
        modseq = query.uses_modseq(criteria)
        # The full-text index narrows the rows to read and says which certainly match;
        # the rule below still decides (mssmail/store/fts.py).
        narrowed = self.fts_narrow(ref, criteria)
        # A search that is one text or FROM key (IMAP's `TEXT x`): its sure hits need no row at all.
        leaf = criteria
        while isinstance(leaf, query.And) and len(leaf.items) == 1:
            leaf = leaf.items[0]
        sure: AbstractSet[int] = frozenset()
        ordered: Sequence[int] = ()
        candidates = narrowed.candidates
        if leaf in narrowed.certain and candidates is not None and not modseq:
            sure, ordered = narrowed.certain[leaf].sure, narrowed.certain[leaf].ordered
            # The same set when nothing is pending (fts_narrow): then no candidate is left.
            candidates = set() if candidates is sure else candidates - sure
        # No candidate left (every hit sure, nothing pending): no query at all.
        rows = [] if candidates is not None and not candidates else self.search_rows(
            ref, query.COLUMNS, query.columns_for(criteria, modseq=modseq), uids=candidates)
        kept: Sequence[int] | None = None  # the sure hits, ascending, when worked out in order
        if within is not None and sure and not rows and len(ordered) == len(sure) and isinstance(within, list):
            kept = query.among_ascending(ordered, within)  # the session's UIDs: ascending
        if kept is None and within is not None and (rows or sure):
            known = within if isinstance(within, AbstractSet) else set(within)
            rows = [r for r in rows if r[query.UID] in known]
            sure = sure & known
        address = ref.address
        matched: Sequence[int]
        matched, read = query.evaluate(criteria, rows,
                                       lambda sha: self.view(address, self.blobs.read(sha)),
                                       certain=narrowed.certain)
        if kept is not None:
            matched, sure = kept, frozenset()  # (no rows: nothing else matched)
            sure_count = len(kept)
        else:
            sure_count = len(sure)
        if sure:
            # A set of small integers iterates nearly in order: sorting it is one pass.
            matched = sorted(sure | set(matched) if matched else sure)
        if read or query.reads_content(criteria):
            self.audit_search(ref, query.describe(criteria), read, len(matched), ip=ip)
        highest = None
        if modseq and matched:
            by_uid = {r[query.UID]: r[query.MODSEQ] for r in rows}
            highest = max(by_uid[u] for u in matched)
        uids = matched if isinstance(matched, query.JoinedUids) else tuple(matched)
        return SearchResult(uids, len(rows) + sure_count, read, highest)

    def search_mailbox(self: Store, actor: Actor | str, address: str, criteria: Query, *,
                       folders: Sequence[str] | None = None, ip: str = "") -> list[FolderHits]:
        """`search` over several folders of one mailbox (all of them by default: the
        webmail's "Tous les dossiers"), each folder evaluated exactly as `search` does
        it, so every folder's answer is the one IMAP SEARCH gives there. One `search`
        audit event for the whole call (message `*`, the folders and counts in its
        details), recorded before the answer, when the query looks into content or had
        to read messages (the same rule as `search`). Folders the actor cannot open
        raise as `open_folder` does."""
        names = list(folders) if folders is not None else [f.name for f in self.folder_list(actor, address)]
        hits: list[FolderHits] = []
        scanned = read = matched_count = 0
        mailbox = ""
        who = as_actor(actor)
        for name in dict.fromkeys(names):
            ref = self.folder_open(actor, address, name, uids=False).ref
            mailbox = ref.address
            # As `search`: the full-text index narrows, the rule decides.
            narrowed = self.fts_narrow(ref, criteria)
            rows = self.search_rows(ref, query.COLUMNS, query.columns_for(criteria), uids=narrowed.candidates)
            box = ref.address
            matched, reads = query.evaluate(criteria, rows, lambda sha, box=box: self.view(box, self.blobs.read(sha)),
                                            certain=narrowed.certain)
            scanned += len(rows)
            read += reads
            matched_count += len(matched)
            hits.append(FolderHits(ref, tuple(matched)))
        if hits and (read or query.reads_content(criteria)):
            def work(s: Session) -> None:
                audit.record(s, "search", actor=who.audit_name, mailbox=mailbox, ip=ip, message="*",
                             details={"criteria": query.describe(criteria)[:500], "folders": [h.ref.name for h in hits],
                                      "scanned": scanned, "read": read, "matched": matched_count})

            self._write(work)
        return hits

    def message_summaries(self: Store, ref: FolderRef, uids: Iterable[int]) -> list[MessageSummary]:
        """The listing rows of these messages, newest first (not audited: metadata);
        UIDs that are gone are left out."""
        wanted = sorted(set(uids), reverse=True)
        found: list[MessageSummary] = []
        with self.db.engine.connect() as connection:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                rows = connection.execute(select(*_SUMMARY_COLUMNS).where(
                    Message.folder_id == ref.folder_id, Message.uid.in_(chunk))).all()
                found += [_summary(r) for r in rows]
        found.sort(key=lambda m: m.uid, reverse=True)
        return found
