"""Engines and sessions for SQLite (WAL, durable commits) and PostgreSQL."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mssmail.store.driversql import driver_for

WRITE_OPTION = "mss_write"


def make_engine(url: str, pool_size: int = 10, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy emit BEGIN itself so write transactions can take the
        # write lock up front (BEGIN IMMEDIATE) instead of failing on upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is fsynced before it returns (durable before acknowledged).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        # The full-text index's triggers unpack a document's terms with it (fts.pack_terms).
        dbapi_connection.create_function("mss_fts_terms", 1, _unpack_terms, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        # On the DBAPI cursor: every transaction pays this, Core's exec_driver_sql
        # costs more than the BEGIN itself. Errors still come as DBAPIError.
        driver = driver_for(connection)
        sql = "BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION) else "BEGIN"
        if driver is None:
            connection.exec_driver_sql(sql)
        else:
            driver.execute(connection, sql).close()


def _unpack_terms(packed: bytes) -> str:
    return zlib.decompress(packed).decode("utf-8")


class Database:
    """Session factories: `read()` for queries, `write()` for one serialised transaction."""

    def __init__(self, url: str, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, echo=echo)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)
        # SQLite has one writer: serialise in-process writers instead of spinning on
        # SQLITE_BUSY. PostgreSQL writers run concurrently under row locks.
        self._write_lock = threading.Lock() if self.is_sqlite else None
        # SQLite: the one write connection of `write_connection`, kept open under the
        # write lock (see there).
        self._writer: Connection | None = None
        # "NORMAL" when the group committer makes its commits durable itself (syncfs).
        self.writer_synchronous: str | None = None
        # The open `unit()` of each thread, if any (see there).
        self._units = threading.local()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def unit(self, *, savepoints: bool = True) -> Iterator[None]:
        """Join this thread's `write()`s (and `write_connection()`s) until the end of the
        block into ONE transaction, committed at the end (one commit, one fsync), or rolled
        back whole if the block raises.

        Why: the connector worker's route step makes about ten small writes per message
        (audit events, flags, documents, results index, delivery jobs, completion), each
        one a commit of its own that cost ~12 ms on a loaded SQLite (docs/performance.md,
        connectors end to end). Joined, they are one commit, and all or nothing: a kill in
        the middle leaves no half-routed message behind.

        The transaction begins at the first write inside the block (a block that only
        reads takes no write lock). Each inner `write()` runs in a SAVEPOINT, so an inner
        error its caller catches undoes only that write, as it would have alone. Reads
        through `read()` see only what is committed, so the block's own writes are not
        visible to them before the end. `after_commit` callbacks (change notifications)
        run once the commit is done, never after a rollback. Nested units join the outer.

        `savepoints=False`: the inner writes join the transaction without a SAVEPOINT
        each (a SAVEPOINT and its RELEASE were a seventh of the connector worker's CPU
        at 30 messages/s, py-spy), for a block where an inner error is never caught and
        carried on from: an error ends the block and rolls it all back. (An error raised
        before a write wrote anything, such as the job table's `LeaseLost`, may still be
        caught.)
        """
        if getattr(self._units, "state", None) is not None:
            yield
            return
        state = _Unit(savepoints)
        self._units.state = state
        try:
            yield
        except BaseException:
            self._units.state = None
            state.close(commit=False)
            raise
        self._units.state = None
        state.close(commit=True)
        for callback in state.callbacks:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` now, or when this thread's open `unit()` has committed."""
        state: _Unit | None = getattr(self._units, "state", None)
        if state is None:
            callback()
        else:
            state.callbacks.append(callback)

    def unit_connection(self) -> Connection | None:
        """The connection of this thread's open `unit()` once a write began it, else None:
        for a read that must see the unit's own writes (the connector worker's
        acknowledgement check on SQLite, connectors/worker.py)."""
        state: _Unit | None = getattr(self._units, "state", None)
        if state is None or state.session is None:
            return None
        return state.session.connection()

    def _unit_session(self, state: _Unit) -> Session:
        if state.session is None:
            if self._write_lock is not None:
                self._write_lock.acquire()
                state.lock = self._write_lock
            try:
                session = self._write()
                session.begin()
            except BaseException:
                state.close(commit=False)
                raise
            state.session = session
        return state.session

    @contextmanager
    def write(self) -> Iterator[Session]:
        state: _Unit | None = getattr(self._units, "state", None)
        if state is not None:
            session = self._unit_session(state)
            if not state.savepoints:
                yield session
                session.flush()  # as a savepoint's release would have
                return
            with session.begin_nested():
                yield session
            return
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            with self._write() as session, session.begin():
                yield session
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """`write()` without the ORM: for the group committer's Core-only hot path.

        On SQLite, where writers take turns under `_write_lock` anyway, one connection
        is kept open for this: a pool checkout and check-in per transaction cost as
        much CPU as the delivery statements. It is dropped (and a fresh one opened next
        time) whenever a transaction ends in an error, so no broken state is reused.
        PostgreSQL writers run concurrently: a pooled connection each time.
        """
        state: _Unit | None = getattr(self._units, "state", None)
        if state is not None:  # inside a unit: its transaction (the lock is held already)
            session = self._unit_session(state)
            if not state.savepoints:
                yield session.connection()
                return
            with session.begin_nested():
                yield session.connection()
            return
        if self._write_lock is None:
            with self._write_engine.connect() as connection, connection.begin():
                yield connection
            return
        with self._write_lock:
            kept = self._writer
            if kept is None:
                kept = self._writer = self._write_engine.connect()
                if self.writer_synchronous:  # outside any transaction: SQLite requires it
                    driver_connection: Any = kept.connection.driver_connection
                    driver_connection.execute(f"PRAGMA synchronous={self.writer_synchronous}")
            connection = kept
            try:
                with connection.begin():
                    yield connection
            except BaseException:
                self._writer = None
                with suppress(Exception):  # the transaction's own error is the one to report
                    connection.close()
                raise

    def dispose(self) -> None:
        """Close the kept write connection and the pool. Writers must be done by now."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self.engine.dispose()


class _Unit:
    """The state of one `Database.unit()`: its session once a write began it, the write
    lock it holds (SQLite), the callbacks to run after its commit."""

    def __init__(self, savepoints: bool = True) -> None:
        self.savepoints = savepoints
        self.session: Session | None = None
        self.lock: threading.Lock | None = None
        self.callbacks: list[Callable[[], None]] = []

    def close(self, *, commit: bool) -> None:
        session, self.session = self.session, None
        try:
            if session is not None:
                try:
                    if commit:
                        session.commit()
                    else:
                        session.rollback()
                finally:
                    session.close()
        finally:
            lock, self.lock = self.lock, None
            if lock is not None:
                lock.release()
