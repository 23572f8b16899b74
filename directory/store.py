"""Directory store operations over the server's `Store` (its `db.read()` / `db.write()`).

Protocol code (LDAP, CLI, SMTP lookups) calls these, never SQL of its own. Writes normalise
the lowercased search columns in one place (`_lc`) so the indexes always agree with the data.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from directory.filters import Filter
from directory.identifiers import national_id, validate_adeli, validate_mail, validate_rpps
from directory.models import BAL_TYPES, DirMailbox, DirPerson, DirStructure
from directory.sqlfilter import FROM_ENTRIES, where


@contextmanager
def _unique(what: str) -> Iterator[None]:
    """A duplicate natural key becomes a clear ValueError instead of a driver exception."""
    try:
        yield
    except IntegrityError as exc:
        raise ValueError(f"{what} already exists in the directory") from exc


def _lc(v: str | None) -> str | None:
    return v.lower() if v is not None else None


@dataclass
class Entry:
    """One mailbox entry as the LDAP view and the API see it."""

    address: str
    bal_type: str
    display_name: str | None
    unlisted: bool
    preferred_rank: int
    dematerialised: bool
    service: str | None
    family_name: str | None
    given_name: str | None
    rpps: str | None
    national_id: str | None
    profession_code: str | None
    profession_label: str | None
    structure: str | None
    city: str | None
    finess: str | None


# Entry field -> its column in `FROM_ENTRIES`; a search selects the fields it needs.
COLUMNS = {
    "address": "m.address", "bal_type": "m.bal_type", "display_name": "m.display_name", "unlisted": "m.unlisted",
    "preferred_rank": "m.preferred_rank", "dematerialised": "m.dematerialised", "service": "m.service",
    "family_name": "p.family_name", "given_name": "p.given_name", "rpps": "p.ident",
    "national_id": "p.national_id", "profession_code": "p.profession_code",
    "profession_label": "p.profession_label", "structure": "s.name", "city": "s.city", "finess": "s.finess",
}
ENTRY_FIELDS = tuple(COLUMNS)


def add_person(store: Any, *, ident: str, family_name: str, given_name: str | None = None,
               id_type: str = "RPPS", civility_code: str | None = None,
               profession_code: str | None = None, profession_label: str | None = None,
               specialty_code: str | None = None, specialty_label: str | None = None) -> int:
    ident = validate_rpps(ident) if id_type == "RPPS" else validate_adeli(ident)
    with _unique("a person with this identifier"), store.db.write() as s:
        p = DirPerson(id_type=id_type, ident=ident, national_id=national_id(id_type, ident),
                      civility_code=civility_code, family_name=family_name, family_lc=family_name.lower(),
                      given_name=given_name, given_lc=_lc(given_name), profession_code=profession_code,
                      profession_label=profession_label, specialty_code=specialty_code,
                      specialty_label=specialty_label)
        s.add(p)
        s.flush()
        return p.id


def add_structure(store: Any, *, tech_id: str, name: str, finess: str | None = None,
                  siret: str | None = None, city: str | None = None, postal_code: str | None = None,
                  street: str | None = None, sector_code: str | None = None) -> int:
    with _unique("a structure with this identifier"), store.db.write() as s:
        st = DirStructure(tech_id=tech_id, name=name, name_lc=name.lower(), finess=finess, siret=siret,
                          city=city, city_lc=_lc(city), postal_code=postal_code, street=street,
                          sector_code=sector_code)
        s.add(st)
        s.flush()
        return st.id


def add_mailbox(store: Any, *, address: str, bal_type: str, person_id: int | None = None,
                structure_id: int | None = None, display_name: str | None = None,
                service: str | None = None, responsible: str | None = None, unlisted: bool = False,
                preferred_rank: int = 1, dematerialised: bool = True) -> int:
    address = validate_mail(address)
    if bal_type not in BAL_TYPES:
        raise ValueError(f"mailbox type must be one of {', '.join(BAL_TYPES)}, got {bal_type!r}")
    with _unique("a mailbox with this address"), store.db.write() as s:
        m = DirMailbox(address=address, address_lc=address.lower(), bal_type=bal_type,
                       person_id=person_id, structure_id=structure_id, display_name=display_name,
                       display_lc=_lc(display_name), service=service, responsible=responsible,
                       unlisted=unlisted, preferred_rank=preferred_rank, dematerialised=dematerialised)
        s.add(m)
        s.flush()
        return m.id


def search_sql(node: Filter | None, dialect: str, *, include_unlisted: bool = False, limit: int | None = None,
               after: str | None = None, address: str | None = None, ordered: bool = True,
               fields: tuple[str, ...] = ENTRY_FIELDS,
               clause: tuple[str, list[Any]] | None = None) -> tuple[str, list]:
    """The SELECT of `fields` (address first) of the entries matching `node` (see `search`), or
    the ready `clause` (SQL, parameters) of `text_clause`, with its parameters, in the driver's
    placeholder style (qmark for sqlite3, format for psycopg)."""
    params: list[Any] = []
    columns = ", ".join([COLUMNS[f] for f in fields])
    if clause is not None:
        condition, params = clause[0], list(clause[1])
    else:
        assert node is not None
        condition = where(node, dialect, params)
    sql = f"SELECT {columns} FROM {FROM_ENTRIES} WHERE {condition}"
    if not include_unlisted:
        # Liste rouge is never published. coalesce() keeps the planner off the (unselective)
        # unlisted index: the filter's own index must drive the query.
        sql += " AND coalesce(m.unlisted, FALSE) = FALSE"
    if address is not None:
        sql += " AND m.address_lc = ?"
        params.append(address.lower())
    if after is not None:
        sql += " AND m.address_lc > ?"
        params.append(after)
    if ordered:
        # `|| ''` keeps the planner from walking the address index in order (and filtering every
        # row) when the filter's own index is far more selective; the few matches are then sorted.
        sql += " ORDER BY m.address_lc || ''"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    if dialect != "sqlite":
        sql = sql.replace("?", "%s")  # every value is a parameter: no other '?' or '%' in the text
    return sql, params


def _address_lc(row: tuple) -> str:
    return row[0].lower()


def fetch_rows(dbapi: Any, sql: str, params: list) -> list[tuple]:
    """Run a `search_sql` statement on a driver connection: its rows, in address order."""
    cur = dbapi.cursor()
    try:
        cur.execute(sql, params)
        rows = cur.fetchall()
    finally:
        cur.close()
    if len(rows) > 1:
        rows.sort(key=_address_lc)
    return rows


# Published certificates by usage (RFC 4523; binary transfer, RFC 4522): encryption ones in
# userCertificate, signature ones in userSMIMECertificate, as entrymap reads them in.
CERTIFICATE_ATTRIBUTES = {"encryption": "userCertificate;binary", "signature": "userSMIMECertificate;binary"}


def fetch_certificates(dbapi: Any, dialect: str, addresses: list[str]) -> dict[str, list[tuple[str, bytes]]]:
    """The (attribute, DER) certificates of these entries (lower-cased address -> list), in one
    query on the mailbox-address and certificate-mailbox indexes."""
    lowered = sorted({a.lower() for a in addresses})
    if not lowered:
        return {}
    mark = "?" if dialect == "sqlite" else "%s"
    sql = ("SELECT m.address_lc, c.usage, c.der FROM dir_certificates c "
           "JOIN dir_mailboxes m ON m.id = c.mailbox_id "
           f"WHERE m.address_lc IN ({', '.join([mark] * len(lowered))}) ORDER BY c.id")
    found: dict[str, list[tuple[str, bytes]]] = {}
    cur = dbapi.cursor()
    try:
        cur.execute(sql, lowered)
        for address, usage, der in cur.fetchall():
            attr = CERTIFICATE_ATTRIBUTES.get(usage, CERTIFICATE_ATTRIBUTES["encryption"])
            found.setdefault(address, []).append((attr, bytes(der)))
    finally:
        cur.close()
    return found


def fetch(dbapi: Any, sql: str, params: list) -> list[Entry]:
    """`fetch_rows` of a statement of all the ENTRY_FIELDS, as entries."""
    return [Entry(r[0], r[1], r[2], bool(r[3]), r[4], bool(r[5]), *r[6:]) for r in fetch_rows(dbapi, sql, params)]


def search(store: Any, node: Filter, *, include_unlisted: bool = False, limit: int | None = None,
           after: str | None = None, address: str | None = None, ordered: bool = True) -> list[Entry]:
    """Entries matching `node`, in address order. `ordered`: the `limit` first ones by address,
    and `after` is the paging cursor (keyset); unordered: any `limit` matches (the planner's
    cheapest, as an LDAP size limit allows), still returned sorted."""
    sql, params = search_sql(node, store.db.engine.dialect.name, include_unlisted=include_unlisted, limit=limit,
                             after=after, address=address, ordered=ordered)
    raw = store.db.engine.raw_connection()
    try:
        return fetch(raw.driver_connection, sql, params)
    finally:
        raw.close()


# --- free-text search ----------------------------------------------------------------------
# What an operator types (`mss directory search MARTIN`, `hélène durand lyon`, an RPPS): each
# word must be found, accents and case ignored, in a name, the mail address, the structure or
# the city, or be the beginning of an identifier (RPPS, ADELI/national id, FINESS, SIRET).

_TEXT_COLUMNS = ("p.family_lc", "p.given_lc", "m.display_lc", "m.address_lc", "s.name_lc", "s.city_lc")
_ID_COLUMNS = ("p.ident", "p.national_id", "s.finess", "s.siret", "s.postal_code")
# The lowercased columns keep their accents: folded in SQL, by PostgreSQL's translate() for
# the single letters of French and its neighbours (œ and æ by replace()), and on SQLite by
# `fold` itself registered on the connection (nested replace() calls overflow its parser).
_ACCENTED = "àâäáãåçéèêëîïíìôöóòõùûüúÿýñ"
_PLAIN = "aaaaaaceeeeiiiiooooouuuuyyn"
MAX_WORDS = 8


def fold(text: str) -> str:
    """Lowercase without accents, as the SQL fold of `_fold_sql` compares."""
    import unicodedata

    text = text.lower().replace("œ", "oe").replace("æ", "ae")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _fold_sql(column: str, dialect: str) -> str:
    if dialect == "sqlite":
        return f"mss_fold({column})"
    return f"replace(replace(translate({column}, '{_ACCENTED}', '{_PLAIN}'), 'œ', 'oe'), 'æ', 'ae')"


def text_clause(query: str, dialect: str) -> tuple[str, list[Any]]:
    """The WHERE clause (SQL with `?` marks, parameters) of a free-text query. Not indexed
    (folding is computed per row): a scan, fine for an operator's search; an LDAP client's
    filters keep their indexes."""
    from directory.sqlfilter import _like_escape

    words = [w for w in (fold(w) for w in query.split()) if w][:MAX_WORDS]
    if not words:
        raise ValueError("give a word to search for")
    parts: list[str] = []
    params: list[Any] = []
    for word in words:
        pattern = f"%{_like_escape(word)}%"
        alternatives = [f"({_fold_sql(c, dialect)} LIKE ? ESCAPE '\\')" for c in _TEXT_COLUMNS]
        params += [pattern] * len(_TEXT_COLUMNS)
        if word.isalnum():
            alternatives += [f"(upper({c}) LIKE ? ESCAPE '\\')" for c in _ID_COLUMNS]
            params += [f"{_like_escape(word.upper())}%"] * len(_ID_COLUMNS)
        parts.append("(" + " OR ".join(alternatives) + ")")
    return " AND ".join(parts), params


def search_text(store: Any, query: str, *, include_unlisted: bool = False,
                limit: int | None = None) -> list[Entry]:
    """Entries matching every word of `query` (see `text_clause`), in address order."""
    dialect = store.db.engine.dialect.name
    sql, params = search_sql(None, dialect, include_unlisted=include_unlisted,
                             limit=limit, clause=text_clause(query, dialect))
    raw = store.db.engine.raw_connection()
    try:
        if dialect == "sqlite":
            raw.driver_connection.create_function(
                "mss_fold", 1, lambda v: None if v is None else fold(v), deterministic=True)
        return fetch(raw.driver_connection, sql, params)
    finally:
        raw.close()


def is_known_recipient(store: Any, address: str) -> bool:
    """SMTP: is `address` a mailbox of the directory (listed or not)."""
    with store.db.read() as s:
        return s.scalar(select(DirMailbox.id).where(DirMailbox.address_lc == address.lower())) is not None


class Reader:
    """Directory reads for the LDAP server. On SQLite, a query runs first on the event loop's
    thread, on one dedicated connection (WAL: it reads the last commit), within a budget of
    `budget` seconds checked every 1,000 SQLite VM steps: an indexed lookup answers in tens of
    microseconds, without a hop to a thread and back. A query over budget is interrupted and
    `inline` returns OVER_BUDGET: the caller runs it again on the reader's own threads (`run`),
    under the search's time limit; so does a query that finds the database locked. On PostgreSQL
    every query takes the threads. Each reader thread keeps its own connection (PostgreSQL: in
    autocommit, one round trip per query, no pool checkout and ping)."""

    OVER_BUDGET = object()

    def __init__(self, store: Any, budget: float = 0.005, cache_kb: int = 32 * 1024,
                 mmap_bytes: int = 1 << 30, threads: int = 2) -> None:
        self.store = store
        self.dialect = store.db.engine.dialect.name
        self.budget = budget
        self.cache_kb, self.mmap_bytes = cache_kb, mmap_bytes
        self._deadline = 0.0
        self._local = threading.local()
        self._held: list[Any] = []  # the pool connections this reader keeps
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ldap-read")
        self.conn = None
        if self.dialect == "sqlite":
            self.conn = self._connection()
            # Not the store's 30 s wait on a locked database (WAL recovery) in the reactor's thread.
            self.conn.execute(f"PRAGMA busy_timeout={int(budget * 1000)}")
            self.conn.set_progress_handler(self._over, 1000)

    def _connection(self) -> Any:
        """A connection of the store's pool (its pragmas), kept by this reader for good."""
        raw = self.store.db.engine.raw_connection()
        with self._lock:
            self._held.append(raw)
        conn = raw.driver_connection
        if self.dialect == "sqlite":
            # Its own page cache, and reads through a memory map (no read() per page).
            conn.execute(f"PRAGMA cache_size=-{self.cache_kb}")
            conn.execute(f"PRAGMA mmap_size={self.mmap_bytes}")
        else:
            conn.autocommit = True
        return conn

    def _over(self) -> bool:
        return time.monotonic() > self._deadline

    def inline(self, fn: Any, *args: Any) -> Any:
        if self.conn is None:
            return self.OVER_BUDGET
        self._deadline = time.monotonic() + self.budget
        try:
            return fn(self.conn, *args)
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if (time.monotonic() > self._deadline and "interrupt" in text) or "locked" in text:
                return self.OVER_BUDGET
            raise

    def pooled(self, fn: Any, *args: Any) -> Any:
        """`fn(connection, *args)` on the calling thread's own connection of this reader."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connection()
        try:
            return fn(conn, *args)
        except Exception:
            if self.dialect != "sqlite" and conn.closed:
                self._local.conn = None  # the server went away: a new connection next time
            raise

    async def run(self, fn: Any, *args: Any) -> Any:
        """`pooled` on one of the reader's threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.pooled, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        with self._lock:
            held, self._held = self._held, []
        for raw in held:
            raw.invalidate()  # their settings are not for the pool's other users
        self.conn = None
