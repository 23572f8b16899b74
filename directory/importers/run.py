"""Import a national extraction file into the directory: streaming, batched, idempotent.

The file is read line by line (constant memory) and parsed by directory/importers/formats.py;
rows are written in batches of `batch_size` lines, one transaction per batch, with Core
executemany statements (no ORM objects). Each import is a generation (a `dir_imports` row):
every entry seen gets `import_gen = generation`; an entry whose imported fields are unchanged
(same `import_hash`) only gets its generation bumped, its data and `modified_at` stay as they
were. At the end, entries that this kind of file created (`source` = the kind) and that the
file no longer lists are removed. Rules of ownership: docs/directory.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Index, delete, select, update

from directory.importers.formats import (
    ACTIVITY,
    MSSANTE,
    ActivityRow,
    FormatError,
    LineDecoder,
    MailboxRow,
    PersonRec,
    Rejected,
    StructureRec,
    detect_kind,
    iter_lines,
    parse_line,
)
from directory.models import DirActivity, DirImport, DirMailbox, DirPerson, DirStructure
from mssmail.store.models import utcnow

P = DirPerson.__table__
S = DirStructure.__table__
A = DirActivity.__table__
M = DirMailbox.__table__
CHUNK = 900  # bound parameters per IN (...) list
MAX_REJECTED_KEPT = 10_000  # rejected lines kept in the report; all are counted
SQLITE_CACHE_KB = 192_000


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0


@dataclass
class ImportReport:
    kind: str
    filename: str
    encoding: str | None = None
    generation: int | None = None
    read: int = 0  # data lines read (header and blank lines excluded)
    rejected: list[Rejected] = field(default_factory=list)
    rejected_count: int = 0
    tables: dict[str, Counts] = field(default_factory=dict)
    seconds: float = 0.0

    def counts(self, table: str) -> Counts:
        return self.tables.setdefault(table, Counts())

    @property
    def added(self) -> int:
        return sum(c.added for t, c in self.tables.items() if t != "activities")

    @property
    def updated(self) -> int:
        return sum(c.updated for t, c in self.tables.items() if t != "activities")

    @property
    def removed(self) -> int:
        return sum(c.removed for t, c in self.tables.items() if t != "activities")

    def reject(self, r: Rejected) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REJECTED_KEPT:
            self.rejected.append(r)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.filename, "encoding": self.encoding,
                "generation": self.generation, "read": self.read, "added": self.added,
                "updated": self.updated, "removed": self.removed, "rejected": self.rejected_count,
                "rejected_lines": [{"line": r.line, "reason": r.reason} for r in self.rejected],
                "tables": {t: asdict(c) for t, c in self.tables.items()},
                "seconds": round(self.seconds, 3)}


def _chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _existing(conn: Connection, table: Any, key_col: str, keys: Sequence[str], *cols: str) -> dict[str, Any]:
    """{key: row} for the keys already in `table` (driver-level SQL: the IN list is rebuilt per
    chunk, and SQLAlchemy's expanding-IN compilation cost more than the query)."""
    out: dict[str, Any] = {}
    ph = "?" if conn.dialect.name == "sqlite" else "%s"
    head = f"SELECT {', '.join((key_col, *cols))} FROM {table.name} WHERE {key_col} IN "
    for part in _chunks(keys):
        for row in conn.exec_driver_sql(head + "(" + ", ".join([ph] * len(part)) + ")", tuple(part)):
            out[row[0]] = row
    return out


def _bump(conn: Connection, table: Any, ids: list[int], gen: int) -> None:
    """Mark rows as seen by this generation without touching their data or modified_at."""
    for part in _chunks(ids):
        conn.execute(update(table).where(table.c.id.in_(part))
                     .values(import_gen=gen, modified_at=table.c.modified_at))


def _ph(conn: Connection, name: str) -> str:
    """A named placeholder in the driver's own syntax (sqlite3: `:x`, psycopg: `%(x)s`)."""
    return f":{name}" if conn.dialect.name == "sqlite" else f"%({name})s"


def _now(conn: Connection, table: Any) -> Any:
    """`modified_at` as the driver wants it (the column type's bind processing, once per batch)."""
    proc = table.c.modified_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return proc(utcnow()) if proc else utcnow()


def _insert_many(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """executemany INSERT straight through the driver: SQLAlchemy's per-row parameter
    processing costs more than the insert itself at a million rows (bench/directory_import_bench.py)."""
    if not rows:
        return
    now = _now(conn, table)
    for r in rows:
        r["modified_at"] = now
    _insert_rows(conn, table, rows)


def _insert_returning_ids(conn: Connection, table: Any, key: str, rows: list[dict[str, Any]]) -> dict[str, int]:
    """_insert_many, then {key: new id}. SQLite, under the write lock this transaction holds:
    rows without an id get max(id)+1, +2, ... in order (the INTEGER PRIMARY KEY rule), checked
    by max(id) afterwards; otherwise (or on PostgreSQL) the ids are looked up by key."""
    if conn.dialect.name == "sqlite":
        top = f"SELECT coalesce(max(id), 0) FROM {table.name}"
        first = conn.exec_driver_sql(top).scalar() + 1
        _insert_many(conn, table, rows)
        if conn.exec_driver_sql(top).scalar() == first + len(rows) - 1:
            return {r[key]: first + i for i, r in enumerate(rows)}
    else:
        _insert_many(conn, table, rows)
    return {k: row.id for k, row in _existing(conn, table, key, [r[key] for r in rows], "id").items()}


def _update_many(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """executemany UPDATE by id: each row is {"_id": id, column: value, ...}, same columns."""
    if not rows:
        return
    now = _now(conn, table)
    for r in rows:
        r["modified_at"] = now
    names = [k for k in rows[0] if k != "_id"]
    sql = (f"UPDATE {table.name} SET {', '.join(f'{n} = {_ph(conn, n)}' for n in names)} "
           f"WHERE id = {_ph(conn, '_id')}")
    conn.exec_driver_sql(sql, rows)


def _insert_many_plain(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """As _insert_many, for a table without `modified_at`."""
    _insert_rows(conn, table, rows)


def _insert_rows(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """SQLite: executemany of one prepared INSERT. PostgreSQL: multi-row VALUES statements
    (psycopg's executemany costs a round trip per row here: 1,300 rows/s)."""
    names = list(rows[0])
    head = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES "
    if conn.dialect.name == "sqlite":
        # Positional parameters: sqlite3 binds a tuple faster than it looks names up in a dict.
        get = itemgetter(*names)
        params = list(map(get, rows)) if len(names) > 1 else [(get(r),) for r in rows]
        conn.exec_driver_sql(head + f"({', '.join(['?'] * len(names))})", params)
        return
    one = "(" + ", ".join(["%s"] * len(names)) + ")"
    per = max(1, 30_000 // len(names))
    for part in _chunks(rows, per):
        params = tuple(r[n] for r in part for n in names)
        conn.exec_driver_sql(head + ", ".join([one] * len(part)), params)


def _tune(conn: Connection) -> None:
    """SQLite: a larger page cache for the import's connection (the default 2 MB makes index
    inserts miss the cache once the tables pass a few hundred thousand rows)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KB}")
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=10000")


class _Upserter:
    """Insert / update / bump one table keyed by a natural key, for one batch."""

    def __init__(self, report: ImportReport, table: Any, name: str, key: str, gen: int, source: str) -> None:
        self.report, self.table, self.name, self.key, self.gen, self.source = report, table, name, key, gen, source

    def run(self, conn: Connection, recs: dict[str, PersonRec | StructureRec], *,
            only_sources: tuple[str, ...] | None = None, adopt: tuple[str, ...] = ()) -> dict[str, int]:
        """Upsert `recs` ({key: record}); returns {key: id}. Existing rows whose source is not in
        `only_sources` (when given) are linked but left alone; a source in `adopt` becomes ours."""
        counts = self.report.counts(self.name)
        keys = list(recs)
        ex = _existing(conn, self.table, self.key, keys, "id", "import_hash", "import_gen", "source")
        ids: dict[str, int] = {}
        new, changed, bump = [], [], []
        for k in keys:
            rec = recs[k]
            row = ex.get(k)
            if row is None:
                new.append({**rec.values(), "source": self.source, "import_gen": self.gen,
                            "import_hash": rec.digest()})
                continue
            ids[k] = row.id
            if only_sources is not None and row.source not in only_sources:
                continue
            h = rec.digest()
            if row.import_hash != h:
                v = {**rec.values(), "import_gen": self.gen, "import_hash": h, "_id": row.id}
                v.pop(self.key)
                v["source"] = self.source if row.source in adopt else row.source
                changed.append(v)
                if row.import_gen != self.gen:
                    counts.updated += 1
            elif row.import_gen != self.gen:
                bump.append(row.id)
                counts.unchanged += 1
        if new:
            ids.update(_insert_returning_ids(conn, self.table, self.key, new))
            counts.added += len(new)
        _update_many(conn, self.table, changed)
        _bump(conn, self.table, bump, self.gen)
        return ids


class _Writer:
    # Tables whose secondary (non-unique) indexes are built after the import when it is the
    # first one into them (empty): one sorted build per index instead of a B-tree insert per row
    # (deferring only the indexes with random keys was slower: 16.1k against 17.8k rows/s at 1M).
    deferrable: tuple[Any, ...] = ()
    batch_size = 5000

    def __init__(self, store: Any, report: ImportReport, gen: int) -> None:
        self.store, self.report, self.gen = store, report, gen
        self.deferred: list[Index] = []

    def defer_indexes(self) -> None:
        """Drop the secondary indexes of the deferrable tables that are empty (restore_indexes
        builds them again). Indexes left dropped by an interrupted import are built first."""
        with self.store.db.write() as s:
            conn = s.connection()
            for table in self.deferrable:
                ixs = [ix for ix in table.indexes if not ix.unique]
                for ix in ixs:
                    ix.create(conn, checkfirst=True)
                if conn.execute(select(table.c.id).limit(1)).first() is None:
                    for ix in ixs:
                        ix.drop(conn)
                    self.deferred += ixs

    def restore_indexes(self) -> None:
        if not self.deferred:
            return
        with self.store.db.write() as s:
            conn = s.connection()
            _tune(conn)
            for ix in self.deferred:
                ix.create(conn, checkfirst=True)
        self.deferred = []

    def write(self, batch: list[tuple[int, Any]]) -> None:
        raise NotImplementedError

    def remove_missing(self) -> None:
        raise NotImplementedError


class ActivityWriter(_Writer):
    def write(self, batch: list[tuple[int, ActivityRow]]) -> None:
        persons: dict[str, PersonRec] = {}
        structures: dict[str, StructureRec] = {}
        acts: dict[str, ActivityRow] = {}
        for _n, row in batch:
            persons.setdefault(row.person.national_id, row.person)
            if row.structure is not None:
                structures.setdefault(row.structure.tech_id, row.structure)
            acts.setdefault(row.key, row)
        with self.store.db.write() as s:
            conn = s.connection()
            _tune(conn)
            pids = _Upserter(self.report, P, "persons", "national_id", self.gen, ACTIVITY).run(
                conn, persons, adopt=(MSSANTE,))
            sids = _Upserter(self.report, S, "structures", "tech_id", self.gen, ACTIVITY).run(
                conn, structures, adopt=(MSSANTE,))
            counts = self.report.counts("activities")
            keys = list(acts)
            ex = _existing(conn, A, "import_key", keys, "id", "import_gen")
            new, bump = [], []
            for k in keys:
                row = ex.get(k)
                if row is None:
                    a = acts[k]
                    new.append({"person_id": pids[a.person.national_id],
                                "structure_id": sids[a.structure.tech_id] if a.structure else None,
                                "role_code": a.role_code, "role_label": a.role_label, "mode_code": a.mode_code,
                                "mode_label": a.mode_label, "import_key": k, "import_gen": self.gen})
                elif row.import_gen != self.gen:
                    bump.append(row.id)
                    counts.unchanged += 1
            if new:
                _insert_many_plain(conn, A, new)
                counts.added += len(new)
            for part in _chunks(bump):
                conn.execute(update(A).where(A.c.id.in_(part)).values(import_gen=self.gen))

    def remove_missing(self) -> None:
        with self.store.db.write() as s:
            conn = s.connection()
            r = conn.execute(delete(A).where(A.c.import_key.is_not(None), A.c.import_gen < self.gen))
            self.report.counts("activities").removed += r.rowcount
            for table, name in ((P, "persons"), (S, "structures")):
                r = conn.execute(delete(table).where(table.c.source == ACTIVITY, table.c.import_gen < self.gen))
                self.report.counts(name).removed += r.rowcount


def _by_address(row: dict[str, Any]) -> str:
    return row["address_lc"]


class MailboxWriter(_Writer):
    # Mailbox keys (addresses, display names) come in random order: bigger transactions write
    # each dirty index page once for more rows (SQLite only; docs/performance.md, Directory).
    deferrable = (M, P)
    batch_size = 20_000

    def write(self, batch: list[tuple[int, MailboxRow]]) -> None:
        persons: dict[str, PersonRec] = {}
        structures: dict[str, StructureRec] = {}
        boxes: dict[str, tuple[int, MailboxRow]] = {}
        for n, row in batch:
            if row.person is not None:
                persons.setdefault(row.person.national_id, row.person)
            if row.structure is not None:
                structures.setdefault(row.structure.tech_id, row.structure)
            boxes.setdefault(row.address.lower(), (n, row))
        with self.store.db.write() as s:
            conn = s.connection()
            _tune(conn)
            # The mailbox file only creates the persons / structures nobody else has listed.
            pids = _Upserter(self.report, P, "persons", "national_id", self.gen, MSSANTE).run(
                conn, persons, only_sources=(MSSANTE,))
            sids = _Upserter(self.report, S, "structures", "tech_id", self.gen, MSSANTE).run(
                conn, structures, only_sources=(MSSANTE,))
            counts = self.report.counts("mailboxes")
            keys = list(boxes)
            ex = _existing(conn, M, "address_lc", keys, "id", "import_hash", "import_gen", "bal_type")
            new, changed, bump = [], [], []
            for k in keys:
                n, b = boxes[k]
                h = b.digest()
                vals = {"bal_type": b.bal_type, "person_id": pids[b.person.national_id] if b.person else None,
                        "structure_id": sids[b.structure.tech_id] if b.structure else None,
                        "display_name": b.display_name, "display_lc": b.display_name.lower() if b.display_name else None,
                        "service": b.service, "dematerialised": b.dematerialised,
                        "import_gen": self.gen, "import_hash": h}
                row = ex.get(k)
                if row is None:
                    new.append({**vals, "address": b.address, "address_lc": k, "source": MSSANTE,
                                "unlisted": False, "preferred_rank": 1})
                elif row.bal_type != b.bal_type:
                    self.report.reject(Rejected(n, f"the type of mailbox {b.address} cannot change "
                                                   f"({row.bal_type} to {b.bal_type})"))
                    if row.import_gen != self.gen:
                        bump.append(row.id)  # still listed: kept as it was
                elif row.import_hash != h:
                    changed.append({**vals, "_id": row.id})
                    if row.import_gen != self.gen:
                        counts.updated += 1
                elif row.import_gen != self.gen:
                    bump.append(row.id)
                    counts.unchanged += 1
            if new:
                new.sort(key=_by_address)
                _insert_many(conn, M, new)
                counts.added += len(new)
            for c in changed:
                c.pop("bal_type")
            _update_many(conn, M, changed)
            _bump(conn, M, bump, self.gen)

    def remove_missing(self) -> None:
        with self.store.db.write() as s:
            conn = s.connection()
            for table, name in ((M, "mailboxes"), (P, "persons"), (S, "structures")):
                r = conn.execute(delete(table).where(table.c.source == MSSANTE, table.c.import_gen < self.gen))
                self.report.counts(name).removed += r.rowcount


WRITERS = {ACTIVITY: ActivityWriter, MSSANTE: MailboxWriter}


def _begin(store: Any, kind: str, filename: str) -> int:
    with store.db.write() as s:
        imp = DirImport(kind=kind, filename=filename[-500:])
        s.add(imp)
        s.flush()
        return imp.id


def _finish(store: Any, report: ImportReport) -> None:
    with store.db.write() as s:
        s.execute(update(DirImport).where(DirImport.id == report.generation).values(
            encoding=report.encoding, finished_at=utcnow(), rows_read=report.read, added=report.added,
            updated=report.updated, removed=report.removed, rejected=report.rejected_count))


def sniff(path: str | Path) -> str:
    """The kind of a file from its first line: `activity`, `mssante` or `ldif`."""
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    text = LineDecoder().decode(first, 1)
    stripped = text.strip()
    if stripped.startswith(("dn:", "version:", "#")) or (stripped == "" and Path(path).suffix.lower() == ".ldif"):
        return "ldif"
    return detect_kind(text)


def import_file(store: Any, path: str | Path, kind: str = "auto", *, batch_size: int | None = None,
                remove_missing: bool = True, progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import a national extraction file (activity or MSSanté); LDIF goes to directory.ldif.

    `batch_size`: lines per transaction (default: 5,000; 20,000 for the MSSanté file on SQLite). `progress(n)` is called with the number of bytes read since its last call."""
    path = Path(path)
    if kind == "auto":
        kind = sniff(path)
    if kind == "ldif":
        from directory.ldif import import_ldif

        return import_ldif(store, path, progress=progress)
    if kind not in WRITERS:
        raise ValueError(f"unknown import kind {kind!r} (auto, activity, mssante or ldif)")
    t0 = time.perf_counter()
    report = ImportReport(kind=kind, filename=str(path))
    decoder = LineDecoder()
    with open(path, "rb") as f:
        header = f.readline()
        if not header:
            raise FormatError(f"{path} is empty")
        found = detect_kind(decoder.decode(header, 1))
        if found != kind:
            raise FormatError(f"{path} is a {found} file, not a {kind} file")
        if progress:
            progress(len(header))
        report.generation = gen = _begin(store, kind, str(path))
        writer = WRITERS[kind](store, report, gen)
        if not batch_size:  # the larger MSSanté batch is SQLite's: 1.3k rows/s against 4.7k on PostgreSQL
            batch_size = writer.batch_size if store.db.engine.dialect.name == "sqlite" else _Writer.batch_size
        batch: list[tuple[int, Any]] = []
        pending = 0
        writer.defer_indexes()
        try:
            for line in iter_lines(f, decoder, start=2):
                pending += line.size
                parsed = parse_line(kind, line)
                if parsed is None:
                    continue
                report.read += 1
                if isinstance(parsed, Rejected):
                    report.reject(parsed)
                    continue
                batch.append((line.number, parsed))
                if len(batch) >= batch_size:
                    writer.write(batch)
                    batch = []
                    if progress:
                        progress(pending)
                        pending = 0
            if batch:
                writer.write(batch)
        finally:
            writer.restore_indexes()
        if progress and pending:
            progress(pending)
    report.rejected.sort(key=lambda r: r.line)
    report.encoding = decoder.encoding
    if remove_missing and report.read > report.rejected_count:
        writer.remove_missing()
    report.seconds = time.perf_counter() - t0
    _finish(store, report)
    return report

