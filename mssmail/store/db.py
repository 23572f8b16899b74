"""Engines and sessions for SQLite (WAL, durable commits) and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

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

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


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
        """`write()` without the ORM: for the group committer's Core-only hot path."""
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            with self._write_engine.connect() as connection, connection.begin():
                yield connection
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    def dispose(self) -> None:
        self.engine.dispose()
