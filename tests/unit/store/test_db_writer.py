"""`Database.write_connection`: SQLite keeps one write connection, replaced after an
error; driver-level statements raise SQLAlchemy's errors, as Core does."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, func, select

from mssmail.store.db import Database
from mssmail.store.driversql import driver_for
from mssmail.store.models import Domain


def test_sqlite_reuses_one_write_connection_until_an_error(store) -> None:
    db: Database = store.db
    with db.write_connection() as first:
        pass
    with db.write_connection() as again:
        pass
    assert again is first or not db.is_sqlite  # PostgreSQL: a pooled connection each time
    with pytest.raises(RuntimeError), db.write_connection() as failing:
        failing.exec_driver_sql("INSERT INTO domains (name, created_at) VALUES ('x.example', '2026-01-01')")
        raise RuntimeError("boom")
    with db.write_connection() as after:
        assert not after.closed
    assert (after is not failing and failing.closed) or not db.is_sqlite
    with db.read() as s:  # the failed transaction was rolled back
        assert s.execute(select(func.count()).where(Domain.name == "x.example")).scalar() == 0


def test_a_driver_error_is_a_dbapi_error_and_rolls_back(store) -> None:
    with pytest.raises(exc.IntegrityError) as caught, store.db.write_connection() as connection:
        driver = driver_for(connection)
        assert driver is not None
        sql = f"INSERT INTO domains (name, created_at) VALUES ({driver.mark}, {driver.mark})"
        driver.execute(connection, sql, ("y.example", "2026-01-01 00:00:00"))
        driver.execute(connection, sql, ("a.example", "2026-01-01 00:00:00"))  # exists: unique
    assert isinstance(caught.value.orig, connection.dialect.loaded_dbapi.IntegrityError)
    with store.db.write_connection() as connection:  # the writer still works
        assert connection.exec_driver_sql("SELECT count(*) FROM domains WHERE name = 'y.example'").scalar() == 0
