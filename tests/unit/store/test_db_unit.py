"""`Database.unit()`: a thread's writes joined into one transaction, committed whole or
rolled back whole; an inner error caught by its caller undoes only that write; change
notifications wait for the commit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select

from mssmail.store.models import Domain, table

_D = table(Domain)


def _count(store, name: str) -> int:
    with store.db.read() as s:
        return int(s.execute(select(func.count()).where(_D.c.name == name)).scalar() or 0)


def _add(session, name: str) -> None:
    session.execute(insert(_D).values(name=name, created_at=func.now()))


def test_writes_in_a_unit_commit_together(store) -> None:
    db = store.db
    with db.unit():
        with db.write() as s:
            _add(s, "u1.example")
        with db.write_connection() as connection:
            _add(connection, "u2.example")
        assert _count(store, "u1.example") == 0  # not committed before the end of the unit
    assert _count(store, "u1.example") == 1
    assert _count(store, "u2.example") == 1


def test_a_failing_unit_writes_nothing_and_runs_no_callback(store) -> None:
    db = store.db
    ran: list[str] = []
    with pytest.raises(RuntimeError), db.unit():
        with db.write() as s:
            _add(s, "u3.example")
        db.after_commit(lambda: ran.append("x"))
        raise RuntimeError("boom")
    assert _count(store, "u3.example") == 0
    assert ran == []
    with db.write() as s:  # the write lock was released
        _add(s, "u4.example")
    assert _count(store, "u4.example") == 1


def test_an_inner_error_caught_inside_undoes_only_its_write(store) -> None:
    db = store.db
    ran: list[str] = []
    with db.unit():
        with db.write() as s:
            _add(s, "u5.example")
        with pytest.raises(ValueError), db.write() as s:
            _add(s, "u6.example")
            raise ValueError("inner")
        db.after_commit(lambda: ran.append("after"))
        assert ran == []
    assert ran == ["after"]
    assert _count(store, "u5.example") == 1
    assert _count(store, "u6.example") == 0


def test_after_commit_outside_a_unit_runs_at_once(store) -> None:
    ran: list[int] = []
    store.db.after_commit(lambda: ran.append(1))
    assert ran == [1]
