"""The delivery commit path on the DBAPI cursor stores exactly what Core stores.

The same deliveries go into two fresh databases of one engine, once with pre-built
driver SQL (`mssmail.store.driversql`) and once through SQLAlchemy Core (the driver
switched off), with the clock of the audit trail frozen; the stored rows, read back
raw (SQLite: values with their storage classes; PostgreSQL: each row as JSON text),
must be identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mssmail import audit
from mssmail.store import delivery
from mssmail.store.delivery import DeliveryRequest, deliver_batch
from mssmail.store.errors import FolderNotFound
from mssmail.store.service import Store
from mssmail.store.summary import Summary
from tests.conftest import _drop_schema, _pg_schema_url

FROZEN = datetime(2026, 11, 29, 21, 30, 15, 123456, tzinfo=UTC)


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
    a missing folder, a disabled mailbox, an unknown one, one over its quota."""
    def make(n: int, targets: tuple[str, ...], folder: str = "INBOX", seen: bool = False,
             date: datetime | None = None, extra: dict | None = None) -> DeliveryRequest:
        raw = f"Subject: n{n}\r\n\r\nbody {n} é\r\n".encode()
        summary = Summary(from_addr=f"Zoé <z{n}@b.example>", to_addrs="b@a.example, c@a.example",
                          subject=f"Sujet n°{n} — ✓", date=date, message_id=f"<{n}@b.example>",
                          has_attachments=n % 2 == 0)
        return DeliveryRequest(
            summary=summary, sha=store.blobs.put(raw), size=len(raw) + n * 100, targets=targets, folder=folder,
            flags="\\Seen" if seen else "", seen=seen, deleted=False,
            when=datetime(2026, 11, 29, 20, n % 60, 1, 999999, tzinfo=timezone(timedelta(hours=1))),
            action=audit.DELIVERY, actor="z@b.example", sender=f"z{n}@b.example", ip="192.0.2.7",
            extra=extra if extra is not None else {})
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
                patch.setattr(delivery, "driver_for", lambda _connection: None)
                patch.setattr(audit, "driver_for", lambda _connection: None)
            patch.setattr(delivery, "_INSERT_CHUNK", 4)  # several INSERT statements
            requests = _requests(store)
            with store.db.write_connection() as connection:
                results = deliver_batch(connection, requests[:7])
                results += deliver_batch(connection, requests[7:])
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
    driver_url, core_url = two_urls
    with_driver = _deliver(driver_url, tmp_path / "driver", True, monkeypatch)
    with_core = _deliver(core_url, tmp_path / "core", False, monkeypatch)
    assert with_driver == with_core
    messages = dict(item for item in with_driver if isinstance(item, tuple) and item[0] == "messages")
    assert len(messages["messages"]) == 1 + 2 + 1 + 1 + 14  # request 4: only c; 6: over quota


def test_the_driver_path_is_used(store) -> None:
    from mssmail.store.driversql import driver_for

    with store.db.write_connection() as connection:
        assert driver_for(connection) is not None
