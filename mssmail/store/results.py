"""The results index: every HPRIM result and CDA document a connector found in a
delivered message, per mailbox, for the people who read them (issue 13 part 7; the
webmail's "Récupération Hprim", issue 14 store item 8).

Who writes: the connector worker (`connectors.worker`), after the delivery, from what
`connectors.formats` parsed: one entry per HPRIM Net record, HPRIM Santé patient or CDA
document, with the patient's identity (the INS only when the format carries a qualified
one), the lab or author, the date, the counts and the result lines, one table per
request. Never on the SMTP path: the delivery only inserts the job.

Which messages: every INBOX delivery to a mailbox with connector rules (its route job
indexes as it routes), and, in a mailbox without rules, every one whose summary says it
has an attachment (`connector.index` job): an HPRIM file, an IHE_XDM.ZIP, a CDA, and
an S/MIME message (`smime.p7m`), whose content only the worker sees once decrypted.
An Apicrypt-style HPRIM Net *text body* without any attachment is indexed only in a
mailbox with rules (detecting it would mean reading the body on the delivery path).

Who reads: `results_by_patient` (access-checked like `open_folder`: owner, delegates,
administrators; one audited `read`, as the lines are message content), and
`results_zip`, which takes the files through `message_part` (each an audited `read`)
and marks the entries retrieved, with the keyword `$HprimRecupere` on their messages.

How an entry finds its message: by (mailbox, blob digest), not by row id, so it
follows a message moved to another folder (a move writes a new row with the same
bytes). An entry whose message is in no folder any more is not listed, and is deleted
at the mailbox's next indexing.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from mssmail import audit
from mssmail.store import mimeview
from mssmail.store.actors import ActorKind, as_actor
from mssmail.store.errors import AccessDenied, StoreError
from mssmail.store.messages import WRITE_RIGHTS
from mssmail.store.models import Folder, IndexedResult, Message, table

if TYPE_CHECKING:
    from mssmail.store.actors import Actor
    from mssmail.store.service import Store

RETRIEVED_KEYWORD = "$HprimRecupere"
MAX_LISTED = 500
MAX_ZIP_FILES = 500
_R = table(IndexedResult)
# `_purge_gone_results`: entries checked per indexing, and where the next window
# starts, per (database, mailbox).
PURGE_WINDOW = 200
_PURGE_FROM: dict[tuple[str, int], int] = {}


class ResultsError(StoreError):
    pass


@dataclass(frozen=True)
class ResultLine:
    """One result: analysis, value as written, unit, reference range, flag and what it
    means (`abnormal` None for an off-scale `<`/`>`, which is not an abnormal value)."""

    label: str
    value: str
    unit: str = ""
    low: str = ""
    high: str = ""
    flag: str = ""
    abnormal: bool | None = False
    off_scale: str | None = None
    line: int = 0

    @property
    def reference(self) -> str:
        if self.low and self.high:
            return f"{self.low} – {self.high}"
        if self.high:
            return f"< {self.high}"
        if self.low:
            return f"> {self.low}"
        return ""

    @property
    def direction(self) -> str | None:
        """"high" / "low" for an abnormal result whose flag says which way, "abnormal"
        when it does not (A, AA), None otherwise."""
        if not self.abnormal:
            return None
        if self.flag in ("H", "HH", "HU"):
            return "high"
        if self.flag in ("L", "LL", "LU"):
            return "low"
        return "abnormal"


@dataclass(frozen=True)
class ResultTable:
    """One request and its results."""

    title: str
    date: str | None
    lines: tuple[ResultLine, ...] = ()


@dataclass(frozen=True)
class ResultEntry:
    """What the worker indexes for one part of one file of a message."""

    part: str  # MIME part id, or "body"
    file_index: int
    part_index: int
    kind: str
    family: str = ""
    given: str = ""
    birth_date: str | None = None
    sex: str | None = None
    ins: str | None = None
    ins_oid: str | None = None
    insured_nir: str | None = None
    lab: str = ""
    document_date: str | None = None
    result_count: int = 0
    abnormal_count: int = 0
    tables: tuple[ResultTable, ...] = ()
    container: str = ""
    filename: str = ""


@dataclass(frozen=True)
class IndexedDocument:
    """An entry as listed, with where its message is now."""

    id: int
    kind: str
    container: str
    lab: str
    document_date: str | None
    received_at: datetime
    result_count: int
    abnormal_count: int
    tables: tuple[ResultTable, ...]
    retrieved_at: datetime | None
    folder: str
    uidvalidity: int
    uid: int
    part: str
    filename: str
    message_id: str

    @property
    def new(self) -> bool:
        return self.retrieved_at is None


@dataclass(frozen=True)
class PatientResults:
    """A patient and their documents, new ones first, then the latest first."""

    family: str
    given: str
    birth_date: str | None
    ins: str | None
    insured_nir: str | None
    documents: tuple[IndexedDocument, ...] = field(default_factory=tuple)

    @property
    def new_count(self) -> int:
        return sum(1 for d in self.documents if d.new)


@dataclass(frozen=True)
class ResultsDownload:
    data: bytes  # the ZIP
    files: int
    documents: tuple[int, ...]  # the entries marked retrieved


def patient_key(entry: ResultEntry) -> str:
    """Entries of one patient: the same qualified INS, else the same name and birth date."""
    if entry.ins:
        basis = f"ins:{entry.ins_oid or ''}:{entry.ins}"
    else:
        basis = "id:" + "\0".join([" ".join(entry.family.upper().split()), " ".join(entry.given.upper().split()),
                                   entry.birth_date or ""])
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()


def _tables_json(tables: Sequence[ResultTable]) -> list[dict[str, Any]]:
    return [{"title": t.title, "date": t.date, "rows": [
        {"label": r.label, "value": r.value, "unit": r.unit, "low": r.low, "high": r.high, "flag": r.flag,
         "abnormal": r.abnormal, "off_scale": r.off_scale, "line": r.line} for r in t.lines]} for t in tables]


def _tables_of(value: Any) -> tuple[ResultTable, ...]:
    out = []
    for t in value if isinstance(value, list) else []:
        if not isinstance(t, dict):
            continue
        rows = tuple(ResultLine(str(r.get("label", "")), str(r.get("value", "")), str(r.get("unit", "")),
                                str(r.get("low", "")), str(r.get("high", "")), str(r.get("flag", "")),
                                r.get("abnormal"), r.get("off_scale"), int(r.get("line") or 0))
                     for r in t.get("rows", []) if isinstance(r, dict))
        out.append(ResultTable(str(t.get("title", "")), t.get("date"), rows))
    return tuple(out)


def _zip_entry_name(filename: str, fallback: str, used: set[str]) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    base = "".join(c for c in base if c.isprintable() and c not in '<>:"|?*')[:150] or fallback
    name, counter = base, 1
    while name.lower() in used:
        counter += 1
        stem, dot, ext = base.rpartition(".")
        name = f"{stem} ({counter}).{ext}" if dot and stem else f"{base} ({counter})"
    used.add(name.lower())
    return name


class ResultsOps:
    """Store methods of the results index (mixed into `Store`)."""

    def index_results(self: Store, actor: Actor, address: str, *, sha256: str, message_id: str,
                      received_at: datetime | None, entries: Sequence[ResultEntry]) -> int:
        """Index a message's parsed parts (the connector worker, a system actor): an
        entry already there (the same job run again after a crash) is left as it is.
        Entries of messages that are gone are purged. How many were new."""
        who = as_actor(actor)
        if who.kind is ActorKind.USER:
            raise AccessDenied("only the server indexes results.")
        when = received_at or datetime.now(UTC)

        def work(s: Session) -> int:
            mailbox_id, _box, _rights = self._access(s, who, address)
            present = {(r.file_index, r.part_index) for r in s.execute(
                select(_R.c.file_index, _R.c.part_index).where(_R.c.mailbox_id == mailbox_id,
                                                                _R.c.blob_sha256 == sha256))}
            rows = [{
                "mailbox_id": mailbox_id, "blob_sha256": sha256, "message_id": message_id[:998],
                "part": e.part[:64], "filename": e.filename[:255], "file_index": e.file_index,
                "part_index": e.part_index, "kind": e.kind[:40], "container": e.container[:10],
                "family": e.family[:200], "given": e.given[:200], "birth_date": (e.birth_date or None),
                "sex": (e.sex or None), "ins": e.ins, "ins_oid": e.ins_oid, "insured_nir": e.insured_nir,
                "patient_key": patient_key(e), "lab": e.lab[:200], "document_date": e.document_date,
                "result_count": e.result_count, "abnormal_count": e.abnormal_count,
                "requests": _tables_json(e.tables), "received_at": when, "retrieved_at": None,
                "created_at": datetime.now(UTC)}
                for e in entries if (e.file_index, e.part_index) not in present]
            if rows:
                s.execute(_R.insert(), rows)
            self._purge_gone_results(s, mailbox_id)
            return len(rows)

        return self._write(work)

    def _purge_gone_results(self: Store, s: Session, mailbox_id: int) -> None:
        """Drop the entries whose message is gone from every folder, PURGE_WINDOW entries
        per call, the window moving on through the mailbox's entries call after call
        (back to the start after the last). Checking them all each time made indexing
        a message cost time in proportion to the entries already there (7 ms per message
        at 4,000, the 5-minute connector bench at 50 messages/s slowed down by it); a
        mailbox with fewer entries than the window is swept whole at every call. The
        listings skip a gone message's entries anyway (`_locations`)."""
        key = (self.db.url, mailbox_id)
        start = _PURGE_FROM.get(key, 0)
        window = list(s.execute(select(_R.c.id).where(_R.c.mailbox_id == mailbox_id, _R.c.id > start)
                                .order_by(_R.c.id).limit(PURGE_WINDOW)).scalars())
        _PURGE_FROM[key] = window[-1] if len(window) == PURGE_WINDOW else 0
        if window:
            live = (select(Message.id).join(Folder, Folder.id == Message.folder_id)
                    .where(Folder.mailbox_id == mailbox_id, Message.blob_sha256 == _R.c.blob_sha256))
            s.execute(delete(_R).where(_R.c.id.in_(window), ~exists(live)))

    def _locations(self: Store, s: Any, mailbox_id: int, shas: set[str]) -> dict[str, tuple[str, int, int]]:
        """Where each blob's message is in the mailbox: (folder, uidvalidity, uid) of its
        oldest row (a copy in two folders is listed once)."""
        out: dict[str, tuple[str, int, int]] = {}
        ordered = sorted(shas)
        for start in range(0, len(ordered), 500):
            rows = s.execute(
                select(Message.blob_sha256, Folder.name, Folder.uidvalidity, Message.uid)
                .join(Folder, Folder.id == Message.folder_id)
                .where(Folder.mailbox_id == mailbox_id, Message.blob_sha256.in_(ordered[start:start + 500]))
                .order_by(Message.id)).all()
            for sha, folder, uidvalidity, uid in rows:
                out.setdefault(sha, (folder, int(uidvalidity), int(uid)))
        return out

    def results_by_patient(self: Store, actor: Actor | str, address: str, *, new_only: bool = False,
                           limit: int = MAX_LISTED, ip: str = "") -> tuple[PatientResults, ...]:
        """The mailbox's indexed results grouped by patient: patients with new results
        first, each patient's new documents first, then the latest. One audited `read`
        (`details.op = "results"`, the messages listed; no names): the result lines are
        the messages' content."""
        limit = max(1, min(limit, MAX_LISTED))
        who = as_actor(actor)

        def work(s: Session) -> tuple[PatientResults, ...]:
            mailbox_id, box, _rights = self._access(s, who, address)
            query = select(_R).where(_R.c.mailbox_id == mailbox_id)
            if new_only:
                query = query.where(_R.c.retrieved_at.is_(None))
            rows = s.execute(query.order_by(_R.c.retrieved_at.is_(None).desc(), _R.c.received_at.desc(),
                                            _R.c.id.desc()).limit(limit)).all()
            where = self._locations(s, mailbox_id, {r.blob_sha256 for r in rows})
            groups: dict[str, list[Any]] = {}
            documents: dict[int, IndexedDocument] = {}
            for r in rows:
                location = where.get(r.blob_sha256)
                if location is None:
                    continue  # its message is gone
                folder, uidvalidity, uid = location
                documents[r.id] = IndexedDocument(
                    r.id, r.kind, r.container, r.lab, r.document_date, r.received_at, r.result_count,
                    r.abnormal_count, _tables_of(r.requests), r.retrieved_at, folder, uidvalidity, uid, r.part,
                    r.filename, r.message_id)
                groups.setdefault(r.patient_key, []).append(r)
            out = []
            for members in groups.values():
                first = members[0]
                docs = tuple(documents[m.id] for m in members)
                out.append(PatientResults(first.family, first.given, first.birth_date,
                                          next((m.ins for m in members if m.ins), None),
                                          next((m.insured_nir for m in members if m.insured_nir), None), docs))
            # rows came new first then latest first, so each group's order is already right;
            # groups keep the order of their first (best) member
            listed = sorted({f"{d.folder}/{d.uidvalidity}/{d.uid}" for d in documents.values()})
            audit.record(s, audit.READ, actor=who.audit_name, mailbox=box, ip=ip, message="results",
                         details={"op": "results", "documents": len(documents), "messages": listed[:200]})
            return tuple(out)

        return self._write(work)

    def new_results_count(self: Store, actor: Actor | str, address: str) -> int:
        """How many entries wait to be retrieved (not audited: a number, no content)."""
        with self.db.read() as s:
            mailbox_id, _box, _rights = self._access(s, actor, address)
            return len(s.execute(select(_R.c.id).where(_R.c.mailbox_id == mailbox_id,
                                                       _R.c.retrieved_at.is_(None))).all())

    def mark_results_retrieved(self: Store, actor: Actor | str, address: str, ids: Sequence[int], *,
                               ip: str = "") -> int:
        """Mark entries retrieved and their messages `$HprimRecupere` (write rights on the
        mailbox needed: owner or `full` delegate). How many entries changed."""
        who = as_actor(actor)
        with self.db.read() as s:
            mailbox_id, box, rights = self._access(s, who, address)
            if rights not in WRITE_RIGHTS:
                raise AccessDenied(f"{who.name} may only read {box}.")
            rows = s.execute(select(_R.c.id, _R.c.blob_sha256).where(
                _R.c.mailbox_id == mailbox_id, _R.c.id.in_(list(ids)[:MAX_LISTED]))).all()
            where = self._locations(s, mailbox_id, {r.blob_sha256 for r in rows})
        if not rows:
            return 0
        by_folder: dict[str, set[int]] = {}
        for folder, _uidvalidity, uid in where.values():
            by_folder.setdefault(folder, set()).add(uid)
        for folder, uids in sorted(by_folder.items()):
            ref = self.open_folder(who, box, folder)
            self.set_flags(ref, sorted(uids), "+", [RETRIEVED_KEYWORD], ip=ip)

        def work(s: Session) -> int:
            result = s.execute(update(_R).where(_R.c.id.in_([r.id for r in rows]), _R.c.retrieved_at.is_(None))
                               .values(retrieved_at=datetime.now(UTC)))
            return int(getattr(result, "rowcount", 0) or 0)

        return self._write(work)

    def results_zip(self: Store, actor: Actor | str, address: str, ids: Sequence[int], *,
                    ip: str = "") -> ResultsDownload:
        """"Télécharger les fichiers HPRIM": the files of these entries (each file once,
        as it came: the attachment, or the HPRIM Net text body) in one ZIP for the
        practice software, read through `message_part` (one audited `read` per file,
        before any byte is returned); then the entries are marked retrieved."""
        who = as_actor(actor)
        with self.db.read() as s:
            mailbox_id, box, rights = self._access(s, who, address)
            if rights not in WRITE_RIGHTS:
                raise AccessDenied(f"{who.name} may only read {box}.")
            rows = s.execute(select(_R).where(_R.c.mailbox_id == mailbox_id, _R.c.id.in_(list(ids)[:MAX_LISTED]))
                             .order_by(_R.c.received_at, _R.c.id)).all()
            where = self._locations(s, mailbox_id, {r.blob_sha256 for r in rows})
        files: dict[tuple[str, str], Any] = {}
        for r in rows:
            if r.blob_sha256 in where:
                files.setdefault((r.blob_sha256, r.part), r)
        if len(files) > MAX_ZIP_FILES:
            raise ResultsError(f"at most {MAX_ZIP_FILES} files in one download.")
        buffer = io.BytesIO()
        used: set[str] = set()
        refs: dict[str, Any] = {}
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for (sha, part), r in files.items():
                folder, _uidvalidity, uid = where[sha]
                ref = refs.get(folder) or refs.setdefault(folder, self.open_folder(who, box, folder))
                part_id = part if part != "body" else self._body_part(ref, uid)
                data = self.message_part(ref, uid, part_id, ip=ip).data
                day = (r.document_date or r.received_at.date().isoformat()).replace("-", "")
                fallback = f"{day}_{(r.family or 'patient').upper()}.hpr"
                archive.writestr(_zip_entry_name(r.filename, fallback, used), data)
        taken = tuple(r.id for r in rows if r.blob_sha256 in where)
        if taken:
            self.mark_results_retrieved(who, box, taken, ip=ip)
        return ResultsDownload(buffer.getvalue(), len(files), taken)

    def _body_part(self: Store, ref: Any, uid: int) -> str:
        """The part id of the text body an HPRIM Net mail carries its report in: the
        first text/plain part that is not an attachment (the worker's rule)."""
        metas = self.messages_meta(ref, [(uid, uid)], with_extra=True)
        if not metas:
            raise ResultsError(f"no message {uid} in {ref.name}.")
        tree = mimeview.parse_tree(self.view(ref.address, self.blobs.read(metas[0].sha256), metas[0].extra))
        for info in mimeview.list_parts(tree):
            if info.content_type == "text/plain" and not info.is_attachment:
                return info.part_id
        return "1"


__all__ = ["RETRIEVED_KEYWORD", "IndexedDocument", "PatientResults", "ResultEntry", "ResultLine", "ResultTable",
           "ResultsDownload", "ResultsError", "ResultsOps", "patient_key"]
