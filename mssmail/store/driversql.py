"""Pre-built SQL run on the DBAPI cursor of a Core connection, for the commit hot path.

A Core `execute` costs about a hundred microseconds of Python per statement (compiled
cache lookup, parameter construction, events, result setup); the group committer runs
ten statements per transaction and is the one writer, so that overhead caps delivery
throughput. Here the SQL text is built once per dialect from the tables' metadata and
each value goes through its column's own bind processor, so what is stored is what
Core would store (tests/unit/store/test_driversql.py compares the rows). Statements
run inside the caller's transaction on the same DBAPI connection; driver errors are
re-raised as SQLAlchemy's `DBAPIError`s, as from Core.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Select, Table, exc, literal_column, select
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any] | None

# Positional parameter marks of the paramstyles whose drivers take a sequence of values.
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
# Parameters per statement, under SQLite's 32,766 and PostgreSQL's 65,535.
_MAX_PARAMETERS = 8000


class Driver:
    """SQL text and bind processors of one dialect, built on first use."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.mark = _MARKS[dialect.paramstyle]
        # " FOR UPDATE" where the dialect renders row locks (PostgreSQL), "" on SQLite.
        probe = str(select(literal_column("1")).with_for_update().compile(dialect=dialect))
        self.for_update = " FOR UPDATE" if "FOR UPDATE" in probe else ""
        self._processors: dict[tuple[str, tuple[str, ...]], list[Processor]] = {}
        self._error = dialect.loaded_dbapi.Error
        self._selects: dict[Select[*tuple[Any, ...]], _Prepared] = {}

    def marks(self, count: int) -> str:
        """`?, ?, ?` (or `%s, ...`) for an IN list or a VALUES tuple of `count` values."""
        return ", ".join([self.mark] * count)

    def processors(self, table: Table, names: Sequence[str]) -> list[Processor]:
        """The bind processor of each named column for this dialect (None: value as is)."""
        key = (table.name, tuple(names))
        found = self._processors.get(key)
        if found is None:
            found = [_bind_processor(table.c[name], self.dialect) for name in names]
            self._processors[key] = found
        return found

    def execute(self, connection: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement on the connection's DBAPI cursor; the cursor, to fetch from."""
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
        except self._error as error:
            raise self._wrap(connection, error, cursor, sql, params, many=False) from error
        return cursor

    def select_rows(self, connection: Connection, statement: Select[*tuple[Any, ...]],
                    params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A Core `select` built once (named `bindparam`s, `params` their values) run on
        the DBAPI cursor: its rows as tuples, each value through its column's result
        processor as Core gives it (the processors Core picks from the cursor's
        description, worked out on the first run). For the webmail's folder page, seven
        reads a page: Core's execute and its Row objects were a fifth of the page's CPU
        (cProfile). Runs in the connection's transaction, begun here as Core's autobegin
        would (BEGIN on SQLite, see `db._configure_sqlite`): the page's reads see one
        snapshot."""
        prepared = self._selects.get(statement)
        if prepared is None:
            prepared = self._selects.setdefault(statement, _Prepared(statement, self.dialect))
        if not connection.in_transaction():
            connection.begin()
        cursor = self.execute(connection, prepared.sql, prepared.bind(params))
        try:
            rows = cursor.fetchall()
            processors = prepared.processors(cursor.description)
        finally:
            cursor.close()
        if not rows or not any(processors):
            return rows  # type: ignore[no-any-return]
        # Column by column, as Core applies them (each processor takes None too): one
        # `map` per column that has one, not a Python loop over every value (a page's
        # 51 rows of 12 columns).
        columns = list(zip(*rows, strict=True))
        for index, proc in enumerate(processors):
            if proc is not None:
                columns[index] = tuple(map(proc, columns[index]))
        return list(zip(*columns, strict=True))

    def execute_many(self, connection: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row (the driver's executemany)."""
        if not rows:
            return
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(sql, rows)
        except self._error as error:
            raise self._wrap(connection, error, cursor, sql, rows, many=True) from error
        finally:
            cursor.close()

    def insert_new(self, connection: Connection, table: Table, names: Sequence[str],
                   rows: Sequence[Sequence[Any]], unique: str) -> int:
        """Multi-row `INSERT ... ON CONFLICT (unique) DO NOTHING RETURNING`: how many rows
        went in. A row whose `unique` column value exists already (or comes twice in
        `rows`) is skipped; RETURNING names only the rows inserted (PostgreSQL, SQLite
        3.35+: see `driver_for`), which rowcount does not say reliably. One statement per
        chunk instead of one per row: Core's per-row insert of jobs was a fifth of a
        submission's commit (py-spy)."""
        if not rows:
            return 0
        quote = self.dialect.identifier_preparer.quote
        values = process_columns(rows, self.processors(table, names))
        row_marks = f"({self.marks(len(names))})"
        chunk_size = max(1, _MAX_PARAMETERS // len(names))
        inserted = 0
        for start in range(0, len(values), chunk_size):
            chunk = values[start:start + chunk_size]
            sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)}) "
                   f"VALUES {', '.join([row_marks] * len(chunk))} "
                   f"ON CONFLICT ({quote(unique)}) DO NOTHING RETURNING {quote(table.primary_key.columns[0].name)}")
            cursor = self.execute(connection, sql, [value for row in chunk for value in row])
            try:
                inserted += len(cursor.fetchall())
            finally:
                cursor.close()
        return inserted

    def _wrap(self, connection: Connection, error: Exception, cursor: Any, sql: str, params: Any,
              many: bool) -> BaseException:
        """The DBAPIError Core would raise; a lost connection is invalidated as Core does."""
        dbapi_connection = connection.connection.dbapi_connection
        lost = self.dialect.is_disconnect(error, dbapi_connection, cursor)  # type: ignore[arg-type]
        if lost:
            connection.invalidate(error)
        return exc.DBAPIError.instance(sql, params, error, self._error, connection_invalidated=lost,
                                       dialect=self.dialect, ismulti=many)


class _Prepared:
    """A `select`'s SQL text for one dialect, the order of its parameters, their bind
    processors and (after the first run) its columns' result processors."""

    def __init__(self, statement: Select[*tuple[Any, ...]], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.dialect = dialect
        self.types = [column.type for column in statement.selected_columns]
        self.positional = bool(compiled.positional)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ()) if self.positional \
            else tuple(compiled.binds)
        if any(bind.expanding for bind in compiled.binds.values()):
            raise ValueError("select_rows takes no IN-list (expanding) parameter")
        self.binders = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                        for name, bind in compiled.binds.items()}
        # Values written into the statement (a literal in a WHERE): Core sends them too.
        self.defaults = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        self._results: list[Processor] | None = None

    def bind(self, params: Mapping[str, Any]) -> Any:
        values = {}
        for name in self.names:
            value = params[name] if name in params else self.defaults[name]
            proc = self.binders.get(name)
            values[name] = proc(value) if proc is not None and value is not None else value
        return [values[name] for name in self.names] if self.positional else values

    def processors(self, description: Any) -> list[Processor]:
        if self._results is None:
            # What Core's CursorResultMetaData does for each column of the description.
            self._results = [type_._cached_result_processor(self.dialect, entry[1])
                             for type_, entry in zip(self.types, description, strict=True)]
        return self._results


def _bind_processor(column: Column[Any], dialect: Dialect) -> Processor:
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def process_columns(rows: Sequence[Sequence[Any]], processors: Sequence[Processor]) -> list[tuple[Any, ...]]:
    """Rows of values with each column's processor applied: column by column, one loop
    per column with a processor rather than a check per value."""
    columns = list(zip(*rows, strict=True))
    for index, proc in enumerate(processors):
        if proc is not None:
            columns[index] = tuple(map(proc, columns[index]))
    return list(zip(*columns, strict=True))


_drivers: weakref.WeakKeyDictionary[Dialect, Driver | None] = weakref.WeakKeyDictionary()


def driver_for(connection: Connection) -> Driver | None:
    """The `Driver` of the connection's dialect, or None where Core must be used (a
    paramstyle without positional marks, SQLite without RETURNING, before 3.35)."""
    dialect = connection.dialect
    try:
        return _drivers[dialect]
    except KeyError:
        pass
    usable = dialect.paramstyle in _MARKS and dialect.name in ("sqlite", "postgresql")
    if dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        usable = False
    return _drivers.setdefault(dialect, Driver(dialect) if usable else None)
