"""Putting messages into mailboxes: the one write path of every delivery row.

SMTP MX and submission deliveries, the sender's Sent copy, the relay's DSNs and
`Store.deliver` all end in `deliver_batch`, run by the group committer; the delivery
service (`mssmail.delivery`) batches the work before it.

Order of durability (DESIGN rule 2): blob written and flushed, then the rows, the
audit events and any jobs of the delivery committed in one transaction, then callers
may acknowledge. A crash between the two leaves an unreferenced blob, never a row
without its bytes, nor a message without its jobs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection

from mssmail import audit
from mssmail.store import connectors, settings
from mssmail.store.driversql import Driver, driver_for, process_columns
from mssmail.store.errors import FolderNotFound, Refusal, StoreError
from mssmail.store.events import FolderChanged
from mssmail.store.groupcommit import BatchWork, Unprepared
from mssmail.store.models import Folder, Mailbox, Message, table
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
    # Why a recipient was refused (None when delivered); front ends word it.
    refusal: Refusal | None = None


def _flag_columns(flags: str) -> tuple[bool, bool]:
    words = set(flags.split())
    return "\\Seen" in words, "\\Deleted" in words


@dataclass(frozen=True)
class JobSpec:
    """Work to do after a delivery (e.g. a connector's parse or re-delivery), committed
    in the delivery's own transaction: never a message acknowledged without its jobs,
    nor a job without its message. One job per message row the delivery writes for its
    recipients (not for its `then` copies), keyed by `key`, the recipient and the row
    id: a replayed delivery does not duplicate its work."""

    kind: str
    key: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


# writer(connection, [(job, [(recipient, message row id), ...])]) in the delivery's
# transaction: the store's job table (mssmail/store/jobs.py) when this build has it.
JobWriter = Callable[[Connection, list[tuple[JobSpec, list[tuple[str, int]]]]], None]


def _job_table_writer() -> JobWriter | None:
    if importlib.util.find_spec("mssmail.store.jobs") is None:
        return None

    def write(connection: Connection, entries: list[tuple[JobSpec, list[tuple[str, int]]]]) -> None:
        from mssmail.store import jobs as table  # type: ignore[attr-defined, unused-ignore]

        table.enqueue(connection, [
            table.NewJob(kind=spec.kind, key=table.job_key(spec.kind, spec.key, address, message_id),
                         payload=spec.payload, mailbox=address, message_id=message_id)
            for spec, rows in entries for address, message_id in rows])

    return write


job_writer: JobWriter | None = _job_table_writer()


@dataclass(frozen=True)
class DeliveryRequest:
    """One message for one or more local recipients, its blob already durable.

    `then`: further copies written in the same transaction once this one reached at
    least one recipient (or always, with `then_always`): a submission's Sent copy
    rides with the recipients' copy, one durable batch, and does not exist if the
    message was refused. `jobs`: committed with the rows when the message reached at
    least one of its recipients."""

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
    then: tuple[DeliveryRequest, ...] = ()
    then_always: bool = False
    jobs: tuple[JobSpec, ...] = ()


class DeliveryResult(NamedTuple):
    """Outcome by recipient, the folders that changed (to publish once committed),
    and the outcomes of the request's `then` copies, in order (a copy not written
    because the message reached nobody has none)."""

    outcomes: dict[str, DeliveryOutcome]
    changed: list[FolderChanged]
    then: tuple[dict[str, DeliveryOutcome], ...] = ()


class _Box(NamedTuple):
    id: int
    address: str
    disabled: bool
    used_bytes: int
    quota_bytes: int
    settings: Any  # out-of-office and forwarding make jobs (mssmail.store.settings)


class _FolderRow(NamedTuple):
    id: int
    mailbox_id: int
    name: str
    uidvalidity: int
    uidnext: int
    highest_modseq: int


_mailboxes, _folders, _messages = table(Mailbox), table(Folder), table(Message)
# The columns a delivery writes, in the order of each row `_deliver` builds.
MESSAGE_COLUMNS = ("folder_id", "uid", "blob_sha256", "size", "internal_date", "flags", "seen", "deleted",
                   "modseq", "from_addr", "to_addrs", "subject", "date_header", "message_id", "has_attachments",
                   "extra")

# (folder id, next uid, highest modseq, messages added, unseen added)
FolderAdvance = tuple[int, int, int, int, int]


# Rows per INSERT: 16 values each, well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
_INSERT_CHUNK = 500


class _Writes:
    """The statements of a batch delivery, pre-built SQL on the DBAPI cursor (see
    `driversql`): the group committer runs them for every delivery, and Core's
    per-statement Python cost was most of the commit thread's time. This is the one
    code path that writes delivery rows (SMTP, submission, Sent copies, DSNs,
    `Store.deliver`); tests/unit/store/test_driversql.py checks its rows against the
    same deliveries written by SQLAlchemy Core statements."""

    def __init__(self, s: Connection, driver: Driver) -> None:
        self.s = s
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
        values = process_columns(rows, d.processors(_messages, MESSAGE_COLUMNS))
        row_marks = f"({d.marks(len(MESSAGE_COLUMNS))})"
        ids: dict[tuple[int, int], int] = {}
        for start in range(0, len(values), _INSERT_CHUNK):
            chunk = values[start:start + _INSERT_CHUNK]
            sql = (f"INSERT INTO {_messages.name} ({', '.join(MESSAGE_COLUMNS)}) "
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
    messages per transaction, so its statements run on the DBAPI cursor.
    """
    driver = driver_for(s)
    if driver is None:
        raise StoreError(f"deliveries need PostgreSQL or SQLite 3.35 or later, not {s.dialect.name}.")
    return _deliver(_Writes(s, driver), requests)


class _Placed(NamedTuple):
    """A copy given its UID, waiting for its row id."""

    outcomes: dict[str, DeliveryOutcome]
    address: str
    uid: int
    uidvalidity: int


def _deliver(io: _Writes, requests: Sequence[DeliveryRequest]) -> list[DeliveryResult | BaseException]:
    every = [copy for r in requests for copy in (r, *r.then)]
    addresses = sorted({a for r in every for a in r.targets})
    boxes = {row.address: row for row in io.lock_mailboxes(addresses)} if addresses else {}
    used = {row.id: row.used_bytes for row in boxes.values()}
    names = sorted({r.folder for r in every})
    folder_rows = {(row.mailbox_id, row.name): row for row in io.lock_folders(sorted(used), names)} if used else {}
    # Running state per folder: [uidnext, highest_modseq, added, unseen added].
    state = {row.id: [row.uidnext, row.highest_modseq, 0, 0] for row in folder_rows.values()}

    results: list[DeliveryResult | BaseException] = []
    message_rows: list[tuple[Any, ...]] = []
    events: list[audit.Event] = []
    pending: list[_Placed] = []
    inbox: list[bool] = []  # per `pending` row: an inbound delivery (connectors route those)
    envelope: list[str] = []  # per `pending` row: the envelope sender (the Return-Path)
    may_hold_results: list[bool] = []  # per `pending` row: an attachment or an HPRIM body
    # (jobs, index range in `pending` of the rows written for the request's recipients)
    jobs: list[tuple[tuple[JobSpec, ...], int, int]] = []

    def place(request: DeliveryRequest, changed: list[FolderChanged]) -> tuple[dict[str, DeliveryOutcome], int]:
        """Outcomes of one copy, its rows and events queued; how many recipients it reached."""
        outcomes: dict[str, DeliveryOutcome] = {}
        summary = request.summary
        reached = 0
        for address in request.targets:
            box = boxes.get(address)
            if box is None:
                outcomes[address] = DeliveryOutcome(address, False, refusal=Refusal.NO_SUCH_MAILBOX)
                continue
            if box.disabled:
                outcomes[address] = DeliveryOutcome(address, False, refusal=Refusal.MAILBOX_DISABLED)
                continue
            target = folder_rows.get((box.id, request.folder))
            if target is None:  # only a `then` copy gets here (see the check below)
                outcomes[address] = DeliveryOutcome(address, False, refusal=Refusal.NO_SUCH_FOLDER)
                continue
            if used[box.id] + request.size > box.quota_bytes:
                outcomes[address] = DeliveryOutcome(address, False, refusal=Refusal.MAILBOX_FULL)
                continue
            used[box.id] += request.size
            running = state[target.id]
            uid, modseq = running[0], running[1] + 1
            running[0], running[1] = uid + 1, modseq
            running[2] += 1
            running[3] += 0 if request.seen else 1
            # In MESSAGE_COLUMNS order.
            message_rows.append((
                target.id, uid, request.sha, request.size, request.when, request.flags, request.seen,
                request.deleted, modseq, summary.from_addr, summary.to_addrs, summary.subject, summary.date,
                summary.message_id, summary.has_attachments, request.extra))
            events.append(audit.Event(
                request.action, actor=request.actor, mailbox=address, ip=request.ip,
                message=f"{target.name}/{target.uidvalidity}/{uid}",
                details={"sender": request.sender, "size": request.size, "sha256": request.sha,
                         "message_id": summary.message_id}))
            pending.append(_Placed(outcomes, address, uid, target.uidvalidity))
            inbox.append(request.folder == "INBOX" and request.action == audit.DELIVERY)
            envelope.append(request.sender)
            may_hold_results.append(summary.has_attachments or summary.hprim_body)
            changed.append(FolderChanged(box.id, target.id, "new"))
            reached += 1
        return outcomes, reached

    for request in requests:
        missing = next((a for a in request.targets if a in boxes
                        and (boxes[a].id, request.folder) not in folder_rows), None)
        if missing is not None:
            results.append(FolderNotFound(f"no folder {request.folder!r} in {missing}."))
            continue
        if request.jobs and job_writer is None:
            results.append(StoreError("this store has no job table: a delivery with jobs cannot be committed."))
            continue
        first = len(pending)
        changed: list[FolderChanged] = []
        outcomes, reached = place(request, changed)
        if request.jobs and reached:
            jobs.append((request.jobs, first, len(pending)))
        followed: list[dict[str, DeliveryOutcome]] = []
        if request.then and (reached or request.then_always):
            followed = [place(copy, changed)[0] for copy in request.then]
        results.append(DeliveryResult(outcomes, changed, tuple(followed)))

    if message_rows:
        ids = io.insert_messages(message_rows)
        for placed, message_id in zip(pending, ids, strict=True):
            placed.outcomes[placed.address] = DeliveryOutcome(placed.address, True, placed.uid,
                                                              placed.uidvalidity, message_id)
        io.advance_folders([(fid, v[0], v[1], v[2], v[3]) for fid, v in state.items() if v[2]])
        io.set_used_bytes([(row.id, used[row.id]) for row in boxes.values() if used[row.id] != row.used_bytes])
        audit.record_many(io.s, events)
        if jobs:
            assert job_writer is not None
            job_writer(io.s, [(job, [(placed.address, message_id) for placed, message_id
                                     in zip(pending[start:end], ids[start:end], strict=True)])
                              for specs, start, end in jobs for job in specs])
        # Connectors: one route job per INBOX row of a mailbox that has rules (the
        # worker parses after the commit; see mssmail/store/connectors.py).
        # Mailboxes without rules get an index job for a message with an attachment or
        # an HPRIM Net body (the results index, mssmail/store/results.py).
        routable = [(placed, message_id, row, sender, hint) for placed, message_id, row, is_inbox, sender, hint
                    in zip(pending, ids, message_rows, inbox, envelope, may_hold_results, strict=True) if is_inbox]
        connectors.route_jobs(io.s, [(boxes[placed.address].id, placed.address, message_id, row[13], row[2], sender)
                                     for placed, message_id, row, sender, _hint in routable],
                              [hint for *_row, hint in routable])
        # Out-of-office and forwarding: jobs for the automail worker, after the 250.
        settings.automail_jobs(io.s, [(boxes[placed.address].settings, placed.address, message_id, sender)
                                      for placed, message_id, is_inbox, sender in zip(pending, ids, inbox, envelope,
                                                                                     strict=True)
                                      if is_inbox and boxes[placed.address].settings])
    # Outcomes were filled in place; keep each copy's recipients in its own order.
    for result in results:
        if isinstance(result, DeliveryResult):
            for outcomes in (result.outcomes, *result.then):
                ordered = {a: outcomes[a] for a in sorted(outcomes)}
                outcomes.clear()
                outcomes.update(ordered)
    return results


class DeliveryOps:
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
        result: DeliveryResult = self.write_grouped(BatchWork(deliver_batch, request))
        outcomes, changed, _then = result
        for event in changed:
            self.changes.publish(event)
        return outcomes

    def queue_deliveries(self: Store, requests: Sequence[DeliveryRequest]) -> list[Future[DeliveryResult]]:
        """Hand prepared deliveries to the group committer at once, without waiting:
        each future resolves after the commit that made it durable. The caller
        publishes the returned change events (see `deliver`)."""
        return self._committer.submit_many([BatchWork(deliver_batch, r) for r in requests])

    def queue_unprepared(self: Store, prepare: Callable[[Sequence[Any]], list[Any]],
                         payloads: Sequence[Any]) -> list[Future[Any]]:
        """Hand deliveries to the group committer before their blobs are written:
        `prepare(payloads)` runs on its thread, with the other payloads of the batch,
        before the batch's flush, and returns each one's work (a `BatchWork` of
        `deliver_batch`) or exception (see `groupcommit.Unprepared`). One thread fewer
        between the event loop and the commit (mssmail/delivery/pipeline.py)."""
        return self._committer.submit_many([Unprepared(prepare, payload) for payload in payloads])

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
        then: Sequence[DeliveryRequest] = (),
        then_always: bool = False,
        jobs: Sequence[JobSpec] = (),
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
            then=tuple(then), then_always=then_always, jobs=tuple(jobs),
        )
