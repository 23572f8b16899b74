"""Engines and sessions for SQLite (WAL, durable commits) and PostgreSQL."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
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

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
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
