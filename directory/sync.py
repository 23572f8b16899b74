"""Upstream sync: pull mailbox entries from another LDAP directory with ldap3 (`mss directory sync`).

- Paged search (RFC 2696) of `base` with `filter` (default `(mail=*)`), raw attribute values mapped
  by directory/entrymap.py (attributes we do not model are ignored; an entry we cannot map is
  rejected with its DN and the reason, and the sync goes on).
- Idempotent: each synced mailbox keeps a digest of its mapped attributes (`import_hash`); an entry
  whose digest did not change is "unchanged" and not written.
- Ownership: the rows a sync creates have `source = "sync:<id>"`, `<id>` being the upstream's row
  in `dir_sync_state` (one per URL + base + filter). A mailbox that exists locally with another
  source (created by an administrator, an importer or another upstream) is left alone and counted
  as a conflict.
- Incremental when the upstream exposes `modifyTimestamp`: the high-water mark (the greatest
  `modifyTimestamp` seen) is kept in `dir_sync_state`; the next pass fetches
  `(&<filter>(modifyTimestamp>=<mark>))` only. `>=`, not `>`: the timestamp has a one-second
  resolution, so entries of the mark's second are fetched again (and found unchanged).
- Removal: a full pass removes this upstream's mailboxes it no longer returned. An incremental
  pass cannot see deletions in the changed entries, so it also lists the upstream's addresses
  (`mail` only, paged) and removes the same way. Persons and structures this upstream created and
  no mailbox uses any more go with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, exists, select

from directory import entrymap
from directory.models import (
    DirActivity,
    DirCertificate,
    DirMailbox,
    DirPerson,
    DirStructure,
    DirSyncState,
)
from mssmail.store.models import utcnow

DEFAULT_FILTER = "(mail=*)"
FETCH = [*entrymap.ATTRIBUTES, "modifyTimestamp"]
MAX_REJECTED_SHOWN = 100


class SyncError(Exception):
    """The upstream cannot be reached or refuses the search (one clear sentence)."""


@dataclass
class SyncReport:
    upstream: str
    mode: str = "full"  # full | incremental
    since: str | None = None
    read: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    conflicts: int = 0
    rejected_count: int = 0
    high_water: str | None = None
    seconds: float = 0.0
    rejected: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reject(self, dn: str, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_REJECTED_SHOWN:
            self.rejected.append(f"{dn}: {reason}")


def upstream_key(url: str, base: str, flt: str) -> str:
    """The upstream's identity: URL (scheme and host lowercased) + base (+ filter when not the default)."""
    u = url.strip().rstrip("/")
    scheme, _, rest = u.partition("://")
    key = f"{scheme.lower()}://{rest.lower()} {','.join(p.strip().lower() for p in base.split(','))}"
    return key if flt == DEFAULT_FILTER else f"{key} {flt}"


def _connect(url: str, bind_dn: str | None, password: str | None, starttls: bool, ca_file: str | None) -> Any:
    import ssl

    import ldap3
    from ldap3.core.exceptions import LDAPException

    tls = None
    if url.lower().startswith("ldaps://") or starttls:
        tls = ldap3.Tls(ca_certs_file=ca_file, validate=ssl.CERT_REQUIRED)
    try:
        server = ldap3.Server(url, get_info=ldap3.NONE, tls=tls, connect_timeout=10)
        conn = ldap3.Connection(server, user=bind_dn, password=password, raise_exceptions=True,
                                receive_timeout=120, read_only=True)
        conn.open()
        if starttls:
            conn.start_tls()
        conn.bind()
    except LDAPException as exc:
        raise SyncError(f"cannot bind to {url}{' as ' + bind_dn if bind_dn else ''}: {exc}") from exc
    return conn


def _paged(conn: Any, base: str, flt: str, attributes: list[str], page_size: int) -> Iterator[dict[str, Any]]:
    from ldap3 import SUBTREE
    from ldap3.core.exceptions import LDAPException

    try:
        for e in conn.extend.standard.paged_search(base, flt, SUBTREE, attributes=attributes,
                                                   paged_size=page_size, generator=True):
            if e.get("type") == "searchResEntry":
                yield e
    except LDAPException as exc:
        raise SyncError(f"search of {base} with {flt} failed: {exc}") from exc


def _text(raw: dict[str, list[bytes]], name: str) -> str | None:
    for k, v in raw.items():
        if k.lower() == name.lower() and v:
            return v[0].decode("utf-8", "replace")
    return None


def sync(store: Any, url: str, base: str, *, bind_dn: str | None = None, password: str | None = None,
         flt: str = DEFAULT_FILTER, full: bool = False, page_size: int = 500, batch_size: int = 500,
         starttls: bool = False, ca_file: str | None = None,
         progress: Callable[[int], None] | None = None) -> SyncReport:
    t0 = time.perf_counter()
    flt = flt.strip()
    if not (flt.startswith("(") and flt.endswith(")")):
        flt = f"({flt})"
    key = upstream_key(url, base, flt)
    report = SyncReport(upstream=key)
    with store.db.write() as s:
        state = s.scalar(select(DirSyncState).where(DirSyncState.upstream == key))
        if state is None:
            state = DirSyncState(upstream=key)
            s.add(state)
            s.flush()
        state_id, mark = state.id, state.last_modify_ts
    source = f"sync:{state_id}"
    conn = _connect(url, bind_dn, password, starttls, ca_file)
    try:
        if mark and not full:
            report.mode, report.since = "incremental", mark
            query = f"(&{flt}(modifyTimestamp>={mark}))"
        else:
            query = flt
        seen: set[str] = set()
        high = mark if report.mode == "incremental" else None
        batch: list[tuple[str, entrymap.Record]] = []
        for e in _paged(conn, base, query, FETCH, page_size):
            report.read += 1
            raw = e.get("raw_attributes") or {}
            ts = _text(raw, "modifyTimestamp")
            if ts and (high is None or ts > high):
                high = ts
            mail = _text(raw, "mail")
            if mail:
                seen.add(mail.strip().lower())  # a rejected entry keeps its earlier synced version
            try:
                rec = entrymap.to_record(entrymap.normalize(raw.items(), strict=False), strict=False)
            except entrymap.EntryError as exc:
                report.reject(e.get("dn", "?"), str(exc))
                continue
            seen.add(rec.address.lower())
            batch.append((e.get("dn", "?"), rec))
            if len(batch) >= batch_size:
                _write(store, batch, source, report)
                batch = []
                if progress:
                    progress(report.read)
        if batch:
            _write(store, batch, source, report)
        if report.mode == "incremental":
            seen = set()
            for e in _paged(conn, base, flt, ["mail"], page_size):
                mail = _text(e.get("raw_attributes") or {}, "mail")
                if mail:
                    seen.add(mail.strip().lower())
    finally:
        conn.unbind()
    report.removed = _remove_missing(store, source, seen)
    report.high_water = high
    with store.db.write() as s:
        state = s.get(DirSyncState, state_id)
        state.last_modify_ts = high
        state.synced_at = utcnow()
    report.seconds = time.perf_counter() - t0
    return report


def _write(store: Any, batch: list[tuple[str, entrymap.Record]], source: str, report: SyncReport) -> None:
    with store.db.write() as s:
        for dn, rec in batch:
            m = entrymap.find_mailbox(s, rec.address)
            if m is not None and m.source != source:
                report.conflicts += 1
                if len(report.conflicting) < MAX_REJECTED_SHOWN:
                    report.conflicting.append(f"{dn}: {rec.address} exists here from {m.source}; left alone")
                continue
            try:
                with s.begin_nested():
                    status, _ = entrymap.apply(s, rec, source=source, mode="upsert", partial=True,
                                               import_hash=rec.digest())
            except entrymap.EntryError as exc:
                report.reject(dn, str(exc))
                continue
            if status == "added":
                report.added += 1
            elif status == "updated":
                report.changed += 1
            else:
                report.unchanged += 1


def _remove_missing(store: Any, source: str, seen: set[str], chunk: int = 500) -> int:
    with store.db.read() as s:
        ours = s.execute(select(DirMailbox.id, DirMailbox.address_lc).where(DirMailbox.source == source)).all()
    gone = [mid for mid, addr in ours if addr not in seen]
    with store.db.write() as s:
        for i in range(0, len(gone), chunk):
            part = gone[i:i + chunk]
            s.execute(delete(DirCertificate).where(DirCertificate.mailbox_id.in_(part)))
            s.execute(delete(DirMailbox).where(DirMailbox.id.in_(part)))
        # Persons and structures of this upstream that nothing uses any more.
        s.execute(delete(DirPerson).where(
            DirPerson.source == source,
            ~exists().where(DirMailbox.person_id == DirPerson.id),
            ~exists().where(DirActivity.person_id == DirPerson.id)))
        s.execute(delete(DirStructure).where(
            DirStructure.source == source,
            ~exists().where(DirMailbox.structure_id == DirStructure.id),
            ~exists().where(DirActivity.structure_id == DirStructure.id)))
    return len(gone)
