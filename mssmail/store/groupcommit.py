"""Group commit: concurrent deliveries share one SQLite write transaction.

SQLite has one writer, so concurrent SMTP sessions queue for the write lock and each
pays its own BEGIN IMMEDIATE, commit and fsync. A single committer thread takes every
request waiting at that moment, runs each in its own SAVEPOINT (one failing request
rolls back alone), commits once, and only then releases the callers: each is still
acknowledged only after its rows are durable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from mssmail.store.db import Database

T = TypeVar("T")
MAX_BATCH = 64


class GroupCommitter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[tuple[Callable[[Session], Any], Future[Any]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="store-commit", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a shared write transaction; return once committed."""
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._pending.append((work, future))
            self._cond.notify()
        return future.result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            with self.db.write() as session:
                for work, future in batch:
                    savepoint = session.begin_nested()
                    try:
                        result = work(session)
                        savepoint.commit()
                        outcomes.append((future, True, result))
                    except BaseException as exc:  # this request alone fails
                        savepoint.rollback()
                        outcomes.append((future, False, exc))
        except BaseException as exc:  # the commit itself failed: nobody is durable
            for _work, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
