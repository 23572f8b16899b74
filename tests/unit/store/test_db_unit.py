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


def test_a_unit_without_savepoints_issues_none_and_still_commits_or_rolls_back_whole(store) -> None:
    from sqlalchemy import event

    db = store.db
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement.upper())

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.unit(savepoints=False):
            with db.write() as s:
                _add(s, "u7.example")
            with db.write_connection() as connection:
                _add(connection, "u8.example")
        with pytest.raises(RuntimeError), db.unit(savepoints=False):
            with db.write() as s:
                _add(s, "u9.example")
            raise RuntimeError("after the write")
        with db.unit(), db.write() as s:
            _add(s, "u10.example")
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert _count(store, "u7.example") == 1 and _count(store, "u8.example") == 1
    assert _count(store, "u9.example") == 0 and _count(store, "u10.example") == 1
    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    assert len(savepoints) == 1  # only the last unit's (the default keeps them)


def test_connector_audit_batch_writes_its_events_in_order_at_the_end(store) -> None:
    from mssmail.store.actors import Actor

    actor = Actor.system("connectors")

    def actions() -> list[str]:
        with store.db.read() as s:
            from sqlalchemy import text

            return list(s.execute(text("SELECT action FROM audit_events WHERE action LIKE 'connector.%' "
                                       "ORDER BY seq")).scalars())

    with store.db.unit(savepoints=False), store.connector_audit_batch():
        store.connector_audit(actor, "connector.received", details={"n": 1})
        with store.connector_audit_batch():  # nested: the outer one writes
            store.connector_audit(actor, "connector.parsed", details={"n": 2})
        assert actions() == []
        store.connector_audit(actor, "connector.routed", details={"n": 3})
    assert actions() == ["connector.received", "connector.parsed", "connector.routed"]
    with pytest.raises(RuntimeError), store.db.unit(savepoints=False), store.connector_audit_batch():
        store.connector_audit(actor, "connector.delivered")
        raise RuntimeError("rolled back")
    store.connector_audit(actor, "connector.dead")  # no batch: at once
    assert actions() == ["connector.received", "connector.parsed", "connector.routed", "connector.dead"]
    from mssmail import audit

    with store.db.read() as s:
        assert audit.verify(s).ok  # the batch's events chained like any others
