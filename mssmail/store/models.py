"""SQLAlchemy models of the message store.

Message bodies are not here: they are content-addressed blob files (`blobs.py`); a row
holds the blob's SHA-256 and a parsed summary for fast listing. Every table that other
components add (directory, connectors) derives from the same `Base`, so one Alembic
history and one database hold the whole server.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def table(model: type[Base]) -> Table:
    """A model's Core table, typed as one (`__table__` is typed as any FromClause)."""
    return cast(Table, model.__table__)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict: JSON, list: JSON,
                                                  dict[str, Any]: JSON, list[Any]: JSON}


class MailboxType(enum.StrEnum):
    """National model: PER, ORG, APP (CAB is a personal mailbox of a practice)."""

    personal = "personal"
    organisational = "organisational"
    applicative = "applicative"


# RFC 6154 special-use attributes of the folders every mailbox gets.
DEFAULT_FOLDERS: dict[str, str | None] = {
    "INBOX": None,
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
}


class Domain(Base):
    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Mailbox(Base):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="RESTRICT"), index=True)
    type: Mapped[str] = mapped_column(String(20), default=MailboxType.personal.value)
    # RPPS / ADELI of a professional, FINESS / SIRET of a structure, or free text.
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Per-mailbox overrides (crypto policy, ...), free-form.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    domain: Mapped[Domain] = relationship()
    folders: Mapped[list[Folder]] = relationship(
        back_populates="mailbox", cascade="all, delete-orphan", passive_deletes=True
    )


class Delegation(Base):
    """A user allowed into another (organisational) mailbox: a lab's team, an EHPAD's nurses."""

    __tablename__ = "delegations"
    __table_args__ = (UniqueConstraint("mailbox_id", "delegate_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    delegate_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    # "read" or "full" (read, flag, expunge, send as).
    rights: Mapped[str] = mapped_column(String(20), default="full")


class Folder(Base):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    special_use: Mapped[str | None] = mapped_column(String(20))
    # RFC 3501 2.3.1.1: UIDs never go back and are never reused within a UIDVALIDITY.
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    # RFC 7162 (CONDSTORE): bumped on every change to the folder's messages.
    highest_modseq: Mapped[int] = mapped_column(BigInteger, default=1)
    # RFC 3501 2.3.2 (\\Recent): messages with a UID from here on are claimed by no session
    # yet (mssmail/store/imapfolder.py).
    recent_uid: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    unseen_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    mailbox: Mapped[Mailbox] = relationship(back_populates="folders")


class ExpungedUid(Base):
    """A UID gone from a folder and the mod-sequence of its removal (RFC 7162 3.2.5:
    QRESYNC's VANISHED (EARLIER) answers "what went since mod-sequence N"). Kept while
    the folder lives (its UIDVALIDITY never changes, so the UIDs stay meaningful)."""

    __tablename__ = "expunged_uids"
    __table_args__ = (Index("ix_expunged_uids_folder_modseq", "folder_id", "modseq"),)

    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    modseq: Mapped[int] = mapped_column(BigInteger)


class Subscription(Base):
    """One name on a user's IMAP subscription list (RFC 3501 section 6.3.6).

    A list of names, not a property of folders: a subscription outlives its folder (the
    server "MUST NOT unilaterally remove" it, RFC 9051 6.3.7) and may name a folder that
    does not exist yet. `address` is the mailbox the folder is (or would be) in: the
    subscriber's own, or one delegated to it."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "address", "folder"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    folder: Mapped[str] = mapped_column(String(500))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("folder_id", "uid"),
        Index("ix_messages_folder_modseq", "folder_id", "modseq"),
        # The messages the full-text index does not answer for (few): searches read them.
        Index("ix_messages_fts_todo", "folder_id", "id", sqlite_where=text("fts_state != 1"),
              postgresql_where=text("fts_state != 1")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    uid: Mapped[int] = mapped_column(BigInteger)
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    internal_date: Mapped[datetime] = mapped_column(default=utcnow)
    # System flags and keywords, space-separated, sorted (e.g. "$Label1 \\Flagged \\Seen").
    flags: Mapped[str] = mapped_column(Text, default="")
    seen: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    modseq: Mapped[int] = mapped_column(BigInteger, default=1)
    # Parsed summary for listing without reading the blob.
    from_addr: Mapped[str] = mapped_column(Text, default="")
    to_addrs: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    date_header: Mapped[datetime | None] = mapped_column()
    message_id: Mapped[str] = mapped_column(String(998), default="", index=True)
    has_attachments: Mapped[bool] = mapped_column(Boolean, default=False)
    # Extra per-message data: signature report, decryption state, connector results.
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What IMAP FETCH derived from the bytes (ENVELOPE, BODYSTRUCTURE...), pre-rendered
    # (mssmail/imap/fetch.py `cache_entry`): listing a folder writes it without decoding.
    imap_cache: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, default=None)
    # Full-text index (mssmail/store/fts.py): 0 pending, 1 indexed, 2 not indexable (read
    # by every text search). A new row (delivery, append, copy) starts pending.
    fts_state: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")

    folder: Mapped[Folder] = relationship()


class FtsDoc(Base):
    """A message's full-text document: its terms (mssmail/store/fts.py). PostgreSQL
    keeps them as numbers (each its word's `FtsTerm.id` and its column: migration 0017),
    indexed by a GIN index of the array (made by the migration, no model here);
    SQLite compressed, indexed by the contentless FTS5 table `fts_index` (kept in step
    by triggers; made by the migration, as SQLAlchemy has no model of a virtual table;
    a document's rowid there is folder_id << 32 | uid: migration 0016).
    Removed with the message (cascade)."""

    __tablename__ = "fts_docs"

    message_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                            ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    # PostgreSQL: the terms' numbers (fts.term_numbers); SQLite: zlib-compressed (fts.pack_terms).
    terms: Mapped[Any] = mapped_column(LargeBinary().with_variant(postgresql.ARRAY(Integer), "postgresql"))
    # The message's, which never change (a COPY or MOVE makes a new message): a search's
    # hits are answered from fts_docs alone on PostgreSQL (migration 0015). Null only
    # for a document written before 0015 (none: the migration fills them).
    folder_id: Mapped[int | None] = mapped_column(Integer)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    internal_date: Mapped[datetime | None] = mapped_column()


class FtsTerm(Base):
    """The index's vocabulary: every term once, to turn a needle that is part of a word
    into the words that contain it (IMAP SEARCH is a substring match). PostgreSQL: every
    column's words, each with the number that stands for it in the documents (`id`, from
    a sequence; migration 0017), in the "C" collation (a prefix is a range of the key);
    SQLite: the IMAP columns' words, `id` unused (null)."""

    __tablename__ = "fts_terms"
    __table_args__ = ({"sqlite_with_rowid": False},)

    term: Mapped[str] = mapped_column(String(800), primary_key=True)
    id: Mapped[int | None] = mapped_column(Integer)


class AuditEvent(Base):
    """One link of the hash chain (see `mssmail.audit`)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(320), default="")
    mailbox: Mapped[str] = mapped_column(String(320), default="", index=True)
    message_ref: Mapped[str] = mapped_column(String(200), default="")
    remote_ip: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's tip: one row, locked while appending so appends serialise."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class AuthFailure(Base):
    """Failed logins per key (account or remote address), for delay and lockout."""

    __tablename__ = "auth_failures"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column()


class OutboundMessage(Base):
    """A message waiting in the outbound relay queue."""

    __tablename__ = "outbound_queue"
    __table_args__ = (Index("ix_outbound_due", "state", "next_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender: Mapped[str] = mapped_column(String(320))
    # [{"address": ..., "status": "queued"|"sent"|"failed", "error": ..., "dsn_notify": ...}]
    recipients: Mapped[list[Any]] = mapped_column()
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    envelope_id: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # queued, sending, done, failed
    state: Mapped[str] = mapped_column(String(20), default="queued")
    delay_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_until: Mapped[datetime | None] = mapped_column()


class Job(Base):
    """One unit of background work (a connector delivery, an MDN...), leased by a worker.

    `key` makes an insert idempotent: the same work enqueued twice (a delivery retried
    after a crash) is one job. `mailbox` and `message_id` name the message the job is
    about, when there is one; the job is inserted in the transaction that stores the
    message, so neither is ever committed without the other (see `mssmail.store.jobs`).
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "kind", "state", "next_attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What the worker recorded it has done so far (steps of an exactly-once delivery).
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # pending, running, done, failed (waiting for its retry), dead (no more retries)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str] = mapped_column(Text, default="")
    mailbox: Mapped[str] = mapped_column(String(320), default="", index=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class ConnectorRule(Base):
    """One routing rule of a mailbox's connectors: `match` -> a target (see
    `mssmail.store.connectors`). A mailbox's rules are tried by `position`, first match
    wins; one job per (part, target)."""

    __tablename__ = "connector_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    target_type: Mapped[str] = mapped_column(String(16))
    # One or more destinations of that type (directories for `folder`): the rule fans
    # out to each, one job per part and target.
    targets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # {"kind": "hprim_net" | "hprim_sante" | "cda:<LOINC>" | "xdm", "sender": ..., "domain": ...}
    match: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # {"format": ..., "extension": ...}: how the target renders the part
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A webmail login (`mssmail.store.websessions`). Only the SHA-256 of the cookie's
    token is kept: a copy of the database does not let anyone in."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(320), index=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    csrf: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str] = mapped_column(String(64), default="")
    # "password" after the password (only the code pages), "totp" after the code.
    auth_level: Mapped[str] = mapped_column(String(16), default="password")


class TotpCredential(Base):
    """A mailbox's TOTP secret for the webmail's second factor (`mssmail.store.totp`).
    The secret is AES-GCM encrypted under a key derived from DATA/pki/master.key, so a
    database dump alone yields no codes. `last_step` is the RFC 6238 time step of the
    last accepted code: a code of that step or an earlier one is refused (section 5.2)."""

    __tablename__ = "totp_credentials"

    mailbox: Mapped[str] = mapped_column(String(320), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    # False until the first valid code: an enrolment shown but never confirmed.
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class IndexedResult(Base):
    """One parsed HPRIM result (a record, a patient of an HPRIM Santé file) or CDA
    document found in a delivered message (`mssmail.store.results`): what the webmail's
    "Récupération Hprim" lists per patient, written by the connector worker after the
    delivery (never on the SMTP path).

    The message is found again by (mailbox, blob digest): a move gives the message a new
    row but keeps its bytes, so the entry follows it; an entry whose message is gone
    from every folder is not listed and is purged at the mailbox's next indexing.
    The patient's identity and the result lines are kept here, in the store, as the
    message itself is; never in the audit trail or the logs."""

    __tablename__ = "results_index"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "blob_sha256", "file_index", "part_index",
                         name="uq_results_index_document"),
        Index("ix_results_index_new", "mailbox_id", "retrieved_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(998), default="")
    # The MIME part the file came from ("2", "1.2"), or "body" for an HPRIM Net text body.
    part: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255), default="")
    file_index: Mapped[int] = mapped_column(Integer)
    part_index: Mapped[int] = mapped_column(Integer)
    # hprim_net, hprim_sante, cda:<LOINC>; `container` is "xdm" for a document of an archive.
    kind: Mapped[str] = mapped_column(String(40))
    container: Mapped[str] = mapped_column(String(10), default="")
    family: Mapped[str] = mapped_column(String(200), default="")
    given: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[str | None] = mapped_column(String(10))
    sex: Mapped[str | None] = mapped_column(String(4))
    # The INS only when the format carries a qualified one (CDA/XDM), with its OID; an
    # HPRIM Net file's NIR is the insured person's, kept apart and never taken for an INS.
    ins: Mapped[str | None] = mapped_column(String(40))
    ins_oid: Mapped[str | None] = mapped_column(String(64))
    insured_nir: Mapped[str | None] = mapped_column(String(20))
    # Groups a patient's entries: sha256 of the INS, else of name and birth date.
    patient_key: Mapped[str] = mapped_column(String(64))
    lab: Mapped[str] = mapped_column(String(200), default="")
    document_date: Mapped[str | None] = mapped_column(String(10))
    result_count: Mapped[int] = mapped_column(Integer, default=0)
    abnormal_count: Mapped[int] = mapped_column(Integer, default=0)
    # [{"title", "date", "rows": [{"label", "value", "unit", "low", "high", "flag",
    #   "abnormal", "off_scale", "line"}]}]: one table per request
    requests: Mapped[list[Any]] = mapped_column(JSON, default=list)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when the files were downloaded for the practice software ($HprimRecupere).
    retrieved_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AutoReply(Base):
    """Whom a mailbox's out-of-office message answered, and when: RFC 3834 section 2
    wants one answer per correspondent per several days (7 here). Emptied for a
    mailbox when its out-of-office message changes (`mssmail.store.settings`)."""

    __tablename__ = "auto_replies"

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    correspondent: Mapped[str] = mapped_column(String(320), primary_key=True)
    last_sent: Mapped[datetime] = mapped_column(default=utcnow)
