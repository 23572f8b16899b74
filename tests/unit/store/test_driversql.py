"""The delivery commit path on the DBAPI cursor stores exactly what Core stores.

Deliveries have one write path, pre-built SQL on the DBAPI cursor
(`mssmail.store.driversql`). Its reference is here: the same statements as
SQLAlchemy Core (`CoreWrites`, the ORM twin the store no longer carries). The same
deliveries (with Sent copies riding along, and copies not written because their
message reached nobody) go into two fresh databases of one engine, once through each,
with the clock of the audit trail frozen; the stored rows, read back raw (SQLite:
values with their storage classes; PostgreSQL: each row as JSON text), must be
identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Connection, bindparam, insert, select, update

from mssmail import audit
from mssmail.store import delivery, jobs
from mssmail.store.delivery import MESSAGE_COLUMNS, DeliveryRequest, FolderAdvance, deliver_batch
from mssmail.store.errors import FolderNotFound
from mssmail.store.service import Store
from mssmail.store.summary import Summary
from tests.conftest import _drop_schema, _pg_schema_url

FROZEN = datetime(2026, 11, 29, 21, 30, 15, 123456, tzinfo=UTC)


_mailboxes, _folders, _messages = delivery._mailboxes, delivery._folders, delivery._messages
_LOCK_MAILBOXES = (
    select(*(_mailboxes.c[name] for name in delivery._Box._fields))
    .where(_mailboxes.c.address.in_(bindparam("addresses", expanding=True)))
    .order_by(_mailboxes.c.id).with_for_update()
)
_LOCK_FOLDERS = (
    select(*(_folders.c[name] for name in delivery._FolderRow._fields))
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


class CoreWrites:
    """The statements of `delivery._Writes` as SQLAlchemy Core: the reference."""

    def __init__(self, s: Connection) -> None:
        self.s = s

    def lock_mailboxes(self, addresses: list[str]) -> list[delivery._Box]:
        return [delivery._Box._make(row) for row in self.s.execute(_LOCK_MAILBOXES, {"addresses": addresses})]

    def lock_folders(self, mailbox_ids: list[int], names: list[str]) -> list[delivery._FolderRow]:
        return [delivery._FolderRow._make(row) for row in self.s.execute(
            _LOCK_FOLDERS, {"mailbox_ids": mailbox_ids, "names": names})]

    def insert_messages(self, rows: list[tuple]) -> list[int]:
        params = [dict(zip(MESSAGE_COLUMNS, row, strict=True)) for row in rows]
        return list(self.s.execute(_INSERT_MESSAGES, params).scalars().all())

    def advance_folders(self, advances: list[FolderAdvance]) -> None:
        self.s.execute(_ADVANCE_FOLDERS, [{"fid": fid, "next_uid": uid, "modseq": modseq, "added": added,
                                           "unseen": unseen} for fid, uid, modseq, added, unseen in advances])

    def set_used_bytes(self, used: list[tuple[int, int]]) -> None:
        self.s.execute(_SET_USED_BYTES, [{"bid": bid, "new_used": value} for bid, value in used])


class _FrozenDateTime(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
        return FROZEN if tz is not None else FROZEN.replace(tzinfo=None)


@pytest.fixture(params=["sqlite", "postgresql"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path, pg_available: bool) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'driver.db'}", f"sqlite:///{tmp_path / 'core.db'}"
        return
    if not pg_available:
        pytest.skip("PostgreSQL not reachable")
    (one, url_one), (two, url_two) = _pg_schema_url(), _pg_schema_url()
    try:
        yield url_one, url_two
    finally:
        _drop_schema(one)
        _drop_schema(two)


def _requests(store: Store) -> list[DeliveryRequest]:
    """Varied values: dates with and without a zone, None, booleans, unicode, nested JSON;
    a missing folder, a disabled mailbox, an unknown one, one over its quota; Sent copies
    riding along (written, and not written when their message reached nobody, or
    written anyway with `then_always`), a copy to a folder that is missing."""
    def make(n: int, targets: tuple[str, ...], folder: str = "INBOX", seen: bool = False,
             date: datetime | None = None, extra: dict | None = None, then: tuple = (),
             then_always: bool = False) -> DeliveryRequest:
        raw = f"Subject: n{n}\r\n\r\nbody {n} é\r\n".encode()
        summary = Summary(from_addr=f"Zoé <z{n}@b.example>", to_addrs="b@a.example, c@a.example",
                          subject=f"Sujet n°{n} — ✓", date=date, message_id=f"<{n}@b.example>",
                          has_attachments=n % 2 == 0)
        return DeliveryRequest(
            summary=summary, sha=store.blobs.put(raw), size=len(raw) + n * 100, targets=targets, folder=folder,
            flags="\\Seen" if seen else "", seen=seen, deleted=False,
            when=datetime(2026, 11, 29, 20, n % 60, 1, 999999, tzinfo=timezone(timedelta(hours=1))),
            action=audit.DELIVERY, actor="z@b.example", sender=f"z{n}@b.example", ip="192.0.2.7",
            extra=extra if extra is not None else {}, then=then, then_always=then_always)

    def sent(n: int, folder: str = "Sent") -> DeliveryRequest:
        return make(n, ("c@a.example",), folder=folder, seen=True, extra={"recipients": ["b@a.example"]})
    return [
        make(1, ("b@a.example",), date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), extra={"tls": True}),
        make(2, ("b@a.example", "c@a.example"), seen=True,
             extra={"signature": {"ok": False, "signers": ["é", 1, None]}, "n": 1.5}),
        make(3, ("b@a.example",), folder="Nope"),
        make(4, ("c@a.example", "d@a.example", "off@a.example", "nobody@a.example"),
             date=datetime(2026, 5, 6, 7, 8, 9)),
        make(5, ("b@a.example",), folder="Sent", seen=True),
        make(6, ("d@a.example",)),  # over its quota by now
        *(make(n, ("b@a.example", "c@a.example")) for n in range(7, 14)),
        make(14, ("b@a.example",), then=(sent(15),)),
        make(16, ("nobody@a.example",), then=(sent(17),)),  # reached nobody: no Sent copy
        make(18, ("nobody@a.example",), then=(sent(19),), then_always=True),
        make(20, ("b@a.example", "c@a.example"), then=(sent(21), sent(22, folder="Nope"))),
    ]


def _deliver(url: str, root: Path, use_driver: bool, monkeypatch: pytest.MonkeyPatch) -> list:
    store = Store(url, root / "blobs", pool_size=2)
    try:
        store.migrate()
        store.ensure_domain("a.example")
        for address in ("b@a.example", "c@a.example", "d@a.example", "off@a.example"):
            store.create_mailbox(address, quota=300 if address == "d@a.example" else 10**9)
        store.set_disabled("off@a.example", True)
        with store.db.engine.begin() as connection:  # uidvalidity comes from the clock
            connection.exec_driver_sql("UPDATE folders SET uidvalidity = 1000 + id")
        with monkeypatch.context() as patch:
            if not use_driver:
                patch.setattr(audit, "driver_for", lambda _connection: None)
                patch.setattr(jobs, "driver_for", lambda _connection: None)
            patch.setattr(delivery, "_INSERT_CHUNK", 4)  # several INSERT statements
            requests = _requests(store)

            def run(connection: Connection, batch: list[DeliveryRequest]) -> list:
                if use_driver:
                    return deliver_batch(connection, batch)
                return delivery._deliver(CoreWrites(connection), batch)  # type: ignore[arg-type]

            with store.db.write_connection() as connection:
                results = run(connection, requests[:7])
                results += run(connection, requests[7:])
        return [_result(r) for r in results] + _stored(store)
    finally:
        store.close()


def _result(result: object) -> object:
    if isinstance(result, FolderNotFound):
        return ("FolderNotFound", str(result))
    return result


def _stored(store: Store) -> list:
    """Every stored row that a delivery writes, as raw as the driver gives it."""
    queries = {
        "messages": "SELECT * FROM messages ORDER BY id",
        "folders": "SELECT id, mailbox_id, name, uidvalidity, uidnext, highest_modseq, message_count, "
                   "unseen_count FROM folders ORDER BY id",
        "mailboxes": "SELECT id, address, used_bytes, quota_bytes, disabled FROM mailboxes ORDER BY id",
        "audit_events": "SELECT * FROM audit_events ORDER BY id",
        "audit_head": "SELECT * FROM audit_head",
        "jobs": "SELECT * FROM jobs ORDER BY id",
    }
    raw = store.db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        rows = []
        for table, sql in queries.items():
            if store.db.is_sqlite:
                cursor.execute(sql.replace("SELECT *", "SELECT *, typeof(id)"))
            else:
                cursor.execute(f"SELECT row_to_json(t)::text FROM ({sql}) t")
            rows.append((table, cursor.fetchall()))
        return rows
    finally:
        raw.close()


def test_driver_and_core_paths_store_identical_rows(two_urls, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(audit, "datetime", _FrozenDateTime)
    monkeypatch.setattr(jobs, "datetime", _FrozenDateTime)
    driver_url, core_url = two_urls
    with_driver = _deliver(driver_url, tmp_path / "driver", True, monkeypatch)
    with_core = _deliver(core_url, tmp_path / "core", False, monkeypatch)
    assert with_driver == with_core
    messages = dict(item for item in with_driver if isinstance(item, tuple) and item[0] == "messages")
    # request 4: only c; 6: over quota; then 1 + 1 (Sent) + 0 + 1 (then_always) + 2 + 1 (no folder Nope)
    assert len(messages["messages"]) == 1 + 2 + 1 + 1 + 14 + 2 + 0 + 1 + 3
    results = [r for r in with_driver if isinstance(r, delivery.DeliveryResult)]
    assert [len(r.then) for r in results[-4:]] == [1, 0, 1, 2]
    assert results[-1].then[0]["c@a.example"].ok and not results[-1].then[1]["c@a.example"].ok
    # connector.index jobs of the INBOX rows with an attachment (even n), through `jobs.enqueue`
    stored_jobs = dict(item for item in with_driver if isinstance(item, tuple) and item[0] == "jobs")["jobs"]
    assert len(stored_jobs) > 5


def test_the_driver_path_is_used(store) -> None:
    from mssmail.store.driversql import driver_for

    with store.db.write_connection() as connection:
        assert driver_for(connection) is not None


def test_select_rows_gives_the_rows_core_gives(store: Store) -> None:
    """The webmail folder page's reads on the DBAPI cursor (`Driver.select_rows`): the
    same values as Core's execute, each through its column's result processor (aware UTC
    datetimes, decoded JSON, booleans), for both engines."""
    from mssmail.store import api, websessions
    from mssmail.store.driversql import driver_for

    address = "rows@a.example"
    store.create_mailbox(address, password="Rows-password-2026")
    for n in range(3):
        raw = (f"From: Labo <lab@b.example>\r\nTo: {address}\r\nSubject: r{n} <&>\r\n"
               f"Date: Mon, 2 Nov 2026 10:0{n}:00 +0000\r\nMessage-ID: <r{n}@x>\r\n\r\nBonjour\r\n").encode()
        store.deliver(raw, [address], extra={"documents": [{"kind": "hprim_net"}]} if n else None)
    token, _info = websessions.create_session(store, address, idle=60, max_age=600)
    with store.db.engine.connect() as connection:
        mailbox_id = connection.execute(api._MAILBOX_ID, {"address": address}).scalar()
        folder_id = connection.execute(select(api.Folder.id).where(api.Folder.mailbox_id == mailbox_id,
                                                                  api.Folder.name == "INBOX")).scalar()
        cases = [(api._ARRIVAL_PAGE, {"folder_id": folder_id, "limit": 2}),
                 (api._ARRIVAL_PAGE_BEFORE, {"folder_id": folder_id, "limit": 5, "before": 3}),
                 (api._FOLDERS_OF, {"mailbox_id": mailbox_id}), (api._QUOTA, {"mailbox_id": mailbox_id}),
                 (api._SUBSCRIBED, {"subscriber": mailbox_id, "address": address}),
                 (websessions._BY_HASH, {"digest": websessions.token_hash(token)})]
        driver = driver_for(connection)
        assert driver is not None
        for statement, params in cases:
            core = [tuple(row) for row in connection.execute(statement, params).all()]
            assert driver.select_rows(connection, statement, params) == core, statement
            assert core  # every case reads something
        first = driver.select_rows(connection, api._ARRIVAL_PAGE, {"folder_id": folder_id, "limit": 5})
    assert [row[0] for row in first] == [3, 2, 1]
    assert first[0][3].tzinfo is not None and first[0][9] == {"documents": [{"kind": "hprim_net"}]}
