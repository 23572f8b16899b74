"""The connectors' part of the store: routing rules per mailbox, the one cheap job a
delivery inserts for a mailbox that has rules, and the calls the connector worker makes
(find a delivered message, tag it, audit its steps).

Why the route job is inserted here, in the delivery's transaction, and not by the SMTP
front end: SMTP answers 250 once the message rows *and* that job are committed (nothing
acknowledged is lost), and no parsing happens on that path: the job names the message
row, the worker reads and parses it afterwards (`connectors.worker`). One indexed query
per delivery batch (`SELECT mailbox_id FROM connector_rules WHERE mailbox_id IN ...`)
is all a delivery pays for connectors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, select, update

from mssmail import audit
from mssmail.store.driversql import driver_for
from mssmail.store.errors import StoreError
from mssmail.store.jobs import NewJob, enqueue, job_key
from mssmail.store.models import ConnectorRule, Folder, Mailbox, Message, table

# The open `connector_audit_batch` of each thread (its events and its store).
_batches = threading.local()

if TYPE_CHECKING:
    from mssmail.store.actors import Actor
    from mssmail.store.service import Store

ROUTE_KIND = "connector.route"
# In a mailbox without rules: parse and index only (mssmail/store/results.py says which
# messages get one).
INDEX_KIND = "connector.index"
DELIVER_KIND = "connector.deliver"
# The acknowledgement to the sender once every target of a message is final (an RFC
# 8098 MDN, or a plain mail on failure): one per message, by its key.
MDN_KIND = "connector.mdn"
# Target types: the inbound ones deliver a message's parts to the recipient's
# software; `pickup` is the other direction (a folder whose files the mailbox sends,
# connectors/pickup.py): it never matches incoming mail.
TARGET_TYPES = ("folder", "mllp", "fhir", "smtp", "imap", "pickup")
INBOUND_TYPES = ("folder", "mllp", "fhir", "smtp", "imap")
MATCH_KEYS = ("kind", "sender", "domain", "codecda")
OPTION_KEYS = ("format", "extension", "require_ins")  # require_ins: connectors/formats/ins_check.py
# Per network target type: file paths and switches only, never a secret (a token or a
# password is read from the file the option names, at delivery time).
TARGET_OPTION_KEYS = {
    "fhir": ("token_file", "cert_file", "key_file", "ca_file"),
    "smtp": ("ca_file", "user", "password_file", "starttls"),
    "imap": ("ca_file", "user", "password_file"),
    "mllp": ("ca_file", "cert_file", "key_file"),  # for mllps:// (connectors/mllp.py)
}
TARGET_SCHEMES = {"fhir": ("https", "http"), "smtp": ("smtp", "smtps"), "imap": ("imap", "imaps")}
FORMATS = ("original", "hprim_net")
_R = table(ConnectorRule)


class RuleNotFound(StoreError):
    pass


@dataclass(frozen=True)
class RuleItem:
    id: int
    mailbox: str
    position: int
    target_type: str
    targets: tuple[str, ...]
    match: dict[str, str]
    options: dict[str, str]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mailbox": self.mailbox, "position": self.position, "type": self.target_type,
                "targets": list(self.targets), "match": dict(self.match), "options": dict(self.options),
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class LocatedMessage:
    """Where a delivered message row is now (it may have been moved or expunged)."""

    mailbox: str
    folder: str
    uid: int
    message_id: str
    sha256: str


def validate_rule(target_type: str, targets: Sequence[str], match: Mapping[str, str],
                  options: Mapping[str, str]) -> None:
    """ValueError with one sentence for a rule the worker could not apply."""
    if target_type not in TARGET_TYPES:
        raise ValueError(f"target type {target_type!r} is not available in this build "
                         f"(available: {', '.join(TARGET_TYPES)}).")
    if not targets or any(not t.strip() for t in targets):
        raise ValueError("a target is required (a directory for --type folder).")
    if target_type in ("folder", "pickup") and any(not t.startswith("/") for t in targets):
        raise ValueError(f"a {target_type} target is an absolute directory path.")
    if target_type == "pickup" and (match or options):
        raise ValueError("a pickup rule sends the folder's files from the mailbox: no --match, --format "
                         "or --extension.")
    if target_type == "mllp":
        for target in targets:
            if not parse_mllp_target(target).tls and set(options) & {"ca_file", "cert_file", "key_file"}:
                raise ValueError(f"ca_file, cert_file and key_file are for mllps:// targets, not {target!r}.")
    unknown = sorted(set(match) - set(MATCH_KEYS))
    if unknown:
        raise ValueError(f"unknown match key {unknown[0]!r} (known: {', '.join(MATCH_KEYS)}).")
    kind = match.get("kind")
    if kind is not None and kind not in ("hprim_net", "hprim_sante", "xdm") and not (
            kind.startswith("cda:") and len(kind) > 4):
        raise ValueError(f"unknown content kind {kind!r} (hprim_net, hprim_sante, cda:<LOINC>, xdm).")
    if target_type in TARGET_SCHEMES:
        _validate_network(target_type, targets, options)
    known = (*OPTION_KEYS, *TARGET_OPTION_KEYS.get(target_type, ()))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: {', '.join(known)}).")
    if target_type == "mllp" and "format" in options:
        raise ValueError("an mllp target always gets HL7 v2.5 ORU^R01; --format is for folders.")
    if options.get("format", "original") not in FORMATS:
        raise ValueError(f"unknown format {options['format']!r} (known: {', '.join(FORMATS)}).")
    if options.get("require_ins", "true") not in ("true", "false"):
        raise ValueError("require_ins is true or false.")
    extension = options.get("extension", "hpr")
    if not extension.isalnum() or len(extension) > 10:
        raise ValueError("an extension is 1 to 10 letters or digits, without the dot.")


@dataclass(frozen=True)
class MllpEndpoint:
    host: str
    port: int
    tls: bool = False


def parse_mllp_target(target: str) -> MllpEndpoint:
    """`host:port` or `mllp://host:port` (plain TCP), `mllps://host:port` (TLS);
    ValueError with one sentence otherwise. The one reading of an MLLP target: the rule
    is checked with it when it is added, and connectors/mllp.py dials what it gives."""
    shape = f"an mllp target is host:port, mllp://host:port or mllps://host:port, not {target!r}."
    scheme, sep, rest = target.partition("://")
    if not sep:
        scheme, rest = "mllp", target
    if scheme not in ("mllp", "mllps"):
        raise ValueError(shape)
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or "/" in host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(shape)
    return MllpEndpoint(host.strip("[]"), int(port), scheme == "mllps")


def _validate_network(target_type: str, targets: Sequence[str], options: Mapping[str, str]) -> None:
    """The URL shapes of the fhir, smtp and imap targets (their modules in `connectors/`
    say what each part means)."""
    from urllib.parse import urlsplit

    schemes = TARGET_SCHEMES[target_type]
    shapes = {"fhir": "https://host[:port]/base", "smtp": "smtp[s]://host:port/recipient@domain",
              "imap": "imap[s]://host:port/Folder"}
    for target in targets:
        parts = urlsplit(target)
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError(f"bad port in {target!r}.") from None
        if parts.scheme not in schemes or not parts.hostname or any(c in target for c in "\r\n "):
            raise ValueError(f"a {target_type} target is {shapes[target_type]}, not {target!r}.")
        if target_type == "fhir" and parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("a fhir target uses https (plain http only to a loopback address).")
        if target_type == "smtp" and "@" not in parts.path:
            raise ValueError(f"an smtp target names its recipient: {shapes['smtp']}, not {target!r}.")
    if "format" in options or "extension" in options:
        raise ValueError(f"--format and --extension are for folder targets, not {target_type}.")
    if options.get("starttls", "required") not in ("required", "optional"):
        raise ValueError("starttls is required or optional.")
    if bool(options.get("user")) != bool(options.get("password_file")):
        raise ValueError("user and password_file go together.")


def route_jobs(connection: Connection, placed: Sequence[tuple[int, str, int, str, str, str]],
               attachments: Sequence[bool] | None = None) -> int:
    """In a delivery's transaction: one `connector.route` job per delivered INBOX row
    whose mailbox has rules, and one `connector.index` job per row of a mailbox without
    rules whose summary says it has an attachment or an HPRIM Net body (`attachments`,
    in `placed` order: the results index, mssmail/store/results.py). `placed`: (mailbox id, address,
    message row id, Message-ID header, blob SHA-256, envelope sender). The envelope
    sender is kept in the route job: the store does not add a Return-Path field, and the
    acknowledgement (an MDN only when Disposition-Notification-To equals it, RFC 8098
    2.1) needs it. How many jobs were inserted."""
    if not placed:
        return 0
    box_ids = sorted({box_id for box_id, *_ in placed})
    driver = driver_for(connection)
    if driver is not None:
        # The committer's DBAPI fast path (driversql): Core's execute was a tenth of an
        # MX delivery's commit (py-spy). Same query as the Core one below.
        cursor = driver.execute(connection, f"SELECT DISTINCT mailbox_id FROM {_R.name} WHERE mailbox_id IN "
                                            f"({driver.marks(len(box_ids))}) AND target_type <> {driver.mark}",
                                [*box_ids, "pickup"])
        try:
            routed = {row[0] for row in cursor.fetchall()}
        finally:
            cursor.close()
    else:
        routed = set(connection.execute(select(_R.c.mailbox_id).where(_R.c.mailbox_id.in_(box_ids),
                                                                       _R.c.target_type != "pickup")
                                        .distinct()).scalars())
    flagged = list(attachments) if attachments is not None else [False] * len(placed)
    jobs = []
    for (box_id, address, row_id, message_id, sha, sender), has_attachment in zip(placed, flagged, strict=True):
        if box_id in routed:
            jobs.append(NewJob(kind=ROUTE_KIND, key=job_key(ROUTE_KIND, address, row_id),
                               payload={"message_id": message_id, "sha256": sha, "return_path": sender},
                               mailbox=address, message_id=row_id))
        elif has_attachment:
            jobs.append(NewJob(kind=INDEX_KIND, key=job_key(INDEX_KIND, address, row_id),
                               payload={"message_id": message_id, "sha256": sha}, mailbox=address,
                               message_id=row_id))
    return enqueue(connection, jobs) if jobs else 0


class ConnectorOps:
    """Store methods for connector rules and the connector worker (mixed into `Store`)."""

    def add_connector_rule(self: Store, actor: Actor, mailbox: str, target_type: str, targets: Sequence[str], *,
                           match: Mapping[str, str] | None = None,
                           options: Mapping[str, str] | None = None) -> RuleItem:
        """A rule after the mailbox's others (rules are tried in order). Audited."""
        match, options = dict(match or {}), dict(options or {})
        targets = list(dict.fromkeys(targets))
        validate_rule(target_type, targets, match, options)
        address = mailbox.strip().lower()
        with self.db.write() as s:
            box_id = s.execute(select(Mailbox.id).where(Mailbox.address == address)).scalar_one_or_none()
            if box_id is None:
                from mssmail.store.errors import MailboxNotFound

                raise MailboxNotFound(f"no mailbox {address}.")
            last = s.execute(select(func.max(_R.c.position)).where(_R.c.mailbox_id == box_id)).scalar()
            rule = ConnectorRule(mailbox_id=box_id, position=(last or 0) + 1, target_type=target_type,
                                 targets=targets, match=match, options=options)
            s.add(rule)
            s.flush()
            audit.record(s, audit.ADMIN, actor=actor.audit_name, mailbox=address, message=f"connector/{rule.id}",
                         details={"op": "connector.add", "type": target_type, "targets": targets, "match": match,
                                  "options": options})
            return RuleItem(rule.id, address, rule.position, target_type, tuple(targets), match, options, rule.created_at)

    def remove_connector_rule(self: Store, actor: Actor, rule_id: int) -> RuleItem:
        with self.db.write() as s:
            found = [r for r in self._rules(s, rule_id=rule_id)]
            if not found:
                raise RuleNotFound(f"no connector rule {rule_id}.")
            s.execute(delete(_R).where(_R.c.id == rule_id))
            audit.record(s, audit.ADMIN, actor=actor.audit_name, mailbox=found[0].mailbox,
                         message=f"connector/{rule_id}", details={"op": "connector.remove"})
            return found[0]

    def connector_rules(self: Store, mailbox: str | None = None) -> list[RuleItem]:
        """Rules in the order they are tried (by mailbox, then position)."""
        with self.db.read() as s:
            return self._rules(s, mailbox=mailbox)

    def _rules(self: Store, s: Any, *, mailbox: str | None = None, rule_id: int | None = None) -> list[RuleItem]:
        query = (select(_R, Mailbox.address).join(Mailbox, Mailbox.id == _R.c.mailbox_id)
                 .order_by(Mailbox.address, _R.c.position, _R.c.id))
        if mailbox is not None:
            query = query.where(Mailbox.address == mailbox.strip().lower())
        if rule_id is not None:
            query = query.where(_R.c.id == rule_id)
        return [RuleItem(r.id, r.address, r.position, r.target_type, tuple(r.targets or ()), dict(r.match or {}),
                         dict(r.options or {}), r.created_at) for r in s.execute(query).all()]

    def locate_message(self: Store, message_row_id: int) -> LocatedMessage | None:
        """The mailbox, folder and UID of a message row, None once it is gone."""
        with self.db.read() as s:
            row = s.execute(select(Mailbox.address, Folder.name, Message.uid, Message.message_id,
                                   Message.blob_sha256)
                            .join(Folder, Folder.id == Message.folder_id)
                            .join(Mailbox, Mailbox.id == Folder.mailbox_id)
                            .where(Message.id == message_row_id)).first()
        if row is None:
            return None
        return LocatedMessage(row.address, row.name, row.uid, row.message_id or "", row.blob_sha256)

    def set_documents(self: Store, message_row_id: int, documents: list[dict[str, Any]]) -> None:
        """`extra["documents"]`: what a connector found in the message (kind, part,
        patient, counts), for the webmail's lists and `Query.HasDocument`/`Patient`."""
        with self.db.write() as s:
            extra = s.execute(select(Message.extra).where(Message.id == message_row_id)).scalar_one_or_none()
            if extra is None and not s.execute(select(Message.id).where(Message.id == message_row_id)).first():
                return
            s.execute(update(Message).where(Message.id == message_row_id)
                      .values(extra={**(extra or {}), "documents": documents},
                              fts_state=0))  # indexed again, with the documents' text (fts.py)

    def connector_audit(self: Store, actor: Actor, action: str, *, mailbox: str = "", message: str = "",
                        details: Mapping[str, Any] | None = None) -> None:
        """One `connector.*` audit event (received, parsed, routed, delivered, retry, dead,
        quarantined): no patient names, only keys, digests, sizes, outcomes. Inside
        `connector_audit_batch`, kept for the batch's end."""
        if not action.startswith("connector."):
            raise ValueError("a connector audit action starts with 'connector.'.")
        event = audit.Event(action, actor.audit_name, mailbox, message, "", dict(details or {}))
        batch: list[audit.Event] | None = getattr(_batches, "events", None)
        if batch is not None and _batches.store is self:
            batch.append(event)
            return
        with self.db.write() as s:
            audit.record_many(s, [event])

    @contextmanager
    def connector_audit_batch(self: Store) -> Iterator[None]:
        """The `connector_audit` events of this thread in the block, written at its end in
        their order, in one `audit.record_many` (one head read, one insert, one head update
        instead of three statements each): for a block inside a `db.unit()`, whose commit
        they join (the route step writes five to ten). Nothing is written if the block
        raises (its unit rolls back anyway)."""
        if getattr(_batches, "events", None) is not None:
            yield  # nested: the outer batch writes them
            return
        events: list[audit.Event] = []
        _batches.events, _batches.store = events, self
        try:
            yield
        finally:
            _batches.events = _batches.store = None
        if events:
            # Not `write_connection`: outside a unit that is the group committer's kept
            # connection, whose commits that committer makes durable itself.
            with self.db.write() as s:
                audit.record_many(s.connection(), events)  # the DBAPI path (driversql)


__all__ = ["DELIVER_KIND", "INDEX_KIND", "MDN_KIND", "ROUTE_KIND", "TARGET_TYPES", "ConnectorOps", "LocatedMessage",
           "RuleItem",
           "RuleNotFound", "route_jobs", "validate_rule"]
