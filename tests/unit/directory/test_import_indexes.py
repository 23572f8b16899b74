"""The MSSanté import into empty tables builds their secondary indexes after the rows (SQLite and
PostgreSQL): every index is back afterwards, also when the import fails half-way, and an index
left dropped by a killed import is built again by the next import."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from directory.importers import import_file
from directory.importers import run as importer
from directory.importers.synthetic import write_mssante_file
from directory.models import DirMailbox, DirPerson

TABLES = (DirMailbox.__table__, DirPerson.__table__)


def index_names(store) -> dict[str, set[str]]:
    with store.db.engine.connect() as conn:
        insp = inspect(conn)
        # PostgreSQL also lists the indexes of the unique constraints (never dropped).
        return {t.name: {ix["name"] for ix in insp.get_indexes(t.name) if ix["name"].startswith("ix_")}
                for t in TABLES}


def expected() -> dict[str, set[str]]:
    return {t.name: {ix.name for ix in t.indexes} for t in TABLES}


def test_first_import_defers_and_restores_indexes(store, tmp_path, monkeypatch):
    path = write_mssante_file(tmp_path / "m.txt", 130)
    seen: list[dict[str, set[str]]] = []
    write = importer.MailboxWriter.write

    def spy(self, batch):
        seen.append(index_names(store))
        write(self, batch)

    monkeypatch.setattr(importer.MailboxWriter, "write", spy)
    first = import_file(store, path, batch_size=50)
    assert first.counts("mailboxes").added == 130
    assert len(seen) == 3 and not seen[0]["dir_mailboxes"] & expected()["dir_mailboxes"]
    assert index_names(store) == expected()
    seen.clear()
    again = import_file(store, path, batch_size=50)  # tables not empty: indexes kept throughout
    assert again.counts("mailboxes").unchanged == 130
    assert all(names == expected() for names in seen)
    assert index_names(store) == expected()


def test_indexes_restored_after_a_failed_import(store, tmp_path, monkeypatch):
    path = write_mssante_file(tmp_path / "m.txt", 130)
    write = importer.MailboxWriter.write
    calls = []

    def fail_second(self, batch):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        write(self, batch)

    monkeypatch.setattr(importer.MailboxWriter, "write", fail_second)
    with pytest.raises(RuntimeError, match="disk full"):
        import_file(store, path, batch_size=50)
    assert index_names(store) == expected()


def test_next_import_builds_indexes_a_killed_import_left_dropped(store, tmp_path):
    path = write_mssante_file(tmp_path / "m.txt", 60)
    import_file(store, path)
    with store.db.write() as s:  # as if killed between defer_indexes and restore_indexes
        for ix in DirMailbox.__table__.indexes:
            if ix.name == "ix_dir_mailboxes_display_lc":
                ix.drop(s.connection())
    assert "ix_dir_mailboxes_display_lc" not in index_names(store)["dir_mailboxes"]
    again = import_file(store, path)
    assert again.counts("mailboxes").unchanged == 60
    assert index_names(store) == expected()
