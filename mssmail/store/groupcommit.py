"""Group commit: concurrent deliveries share one write transaction.

SQLite has one writer, so concurrent SMTP sessions queue for the write lock and each
pays its own BEGIN IMMEDIATE, commit and fsync; on PostgreSQL, deliveries to one
mailbox queue on its row lock and each pays its own commit. A single committer thread takes every
request waiting at that moment, runs each in its own SAVEPOINT (one failing request
rolls back alone), commits once, and only then releases the callers: each is still
acknowledged only after its rows are durable.

Where the store can flush its files itself (Linux syncfs, `Store.committer_flushes`), the
committer makes the blob files of a batch durable: one flush per cycle, run while the
batch's statements are, and the batch commits only after it. On SQLite the writer
then commits without its own fsync and each caller is released after the next cycle's
flush (which starts after that commit): one flush a cycle instead of two, and no
second thread flushing against the first.

Requests wrapped in `BatchWork` go further: all those of a batch that share a batch
function are handed to it together, so that it can write them with a fixed number of
statements (deliveries: a handful per transaction instead of ten per message). If that
batch call fails as a whole, each of its requests is retried alone in its own
SAVEPOINT, so one bad request still cannot fail the others.

Requests wrapped in `Unprepared` are made ready on the committer thread itself, all
those of a batch that share a preparing function together, just before the batch's
flush (deliveries: filters, summaries and blob files; the flush then covers those
files). A delivery thread in between cost two thread hand-offs a batch, each a fight
for the interpreter lock, for work that is a small part of the cycle.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection

from mssmail.store.db import Database

T = TypeVar("T")
MAX_BATCH = 64


@dataclass(frozen=True)
class BatchWork:
    """A request that can be run alone or together with others of its kind.

    `batch(session, payloads)` returns one result per payload, in order; a result that
    is an exception fails that payload alone (the function must not have written
    anything for it).
    """

    batch: Callable[[Connection, Sequence[Any]], list[Any]]
    payload: Any

    def __call__(self, session: Connection) -> Any:
        result = self.batch(session, [self.payload])[0]
        if isinstance(result, BaseException):
            raise result
        return result


@dataclass(frozen=True)
class Unprepared:
    """A request to be made ready on the committer thread, with the others of its batch.

    `prepare(payloads)` returns, for each payload in order, the work to run in the
    batch's transaction (often a `BatchWork`) or the exception that fails that payload
    alone. It runs before the cycle's flush: files it writes are made durable before
    the commit, as those written before `submit_many`. It must not raise as a whole
    (a raise fails every payload of its group)."""

    prepare: Callable[[Sequence[Any]], list[Any]]
    payload: Any

    def __call__(self, session: Connection) -> Any:
        """Prepared alone and run (the committer prepares before it runs anything, so
        only a caller outside it gets here)."""
        work = self.prepare([self.payload])[0]
        if isinstance(work, BaseException):
            raise work
        return work(session)


Outcome = tuple[Future[Any], bool, Any]


class GroupCommitter:
    def __init__(self, db: Database, flush: Callable[[], None] | None = None,
                 deferred_sync: bool = False) -> None:
        """`flush`: makes durable what was written without it (blob files of the works,
        and the database's own commits when `deferred_sync`: its writer then commits
        without fsync and each future waits for the next flush)."""
        self.db = db
        self._flush = flush
        self._deferred = deferred_sync and flush is not None
        self._pending: list[tuple[Callable[[Connection], Any], Future[Any]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="store-commit", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[Connection], T]) -> T:
        """Run `work(connection)` in a shared write transaction; return once committed."""
        return self.submit_many([work])[0].result()  # type: ignore[no-any-return]

    def submit_many(self, works: Sequence[Callable[[Connection], Any]]) -> list[Future[Any]]:
        """Queue several works at once without waiting: each future is resolved after
        the commit that made its work durable (or with its failure)."""
        futures: list[Future[Any]] = [Future() for _ in works]
        with self._cond:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._pending.extend(zip(works, futures, strict=True))
            self._cond.notify()
        return futures

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(10)

    def _run(self) -> None:
        unflushed: list[Outcome] = []  # committed, waiting for a flush to be durable
        flusher = ThreadPoolExecutor(1, thread_name_prefix="store-flush") if self._flush else None
        while True:
            with self._cond:
                while not self._pending and not unflushed and not self._closed:
                    self._cond.wait()
                if not self._pending and not unflushed and self._closed:
                    if flusher is not None:
                        flusher.shutdown()
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            batch = self._prepared(batch)
            if flusher is None:
                self._settle(self._commit(batch))
                continue
            unflushed = self._flushed_cycle(flusher, batch, unflushed)

    def _flushed_cycle(self, flusher: ThreadPoolExecutor, batch: list[tuple[Callable[[Connection], Any], Future[Any]]],
                       unflushed: list[Outcome]) -> list[Outcome]:
        """One flush, run while the batch's statements are: it makes durable the files
        written for the batch (queued after them) and the last cycle's deferred commits
        (committed before it starts). The batch commits only once it is done; its own
        commit, if deferred, waits for the next cycle's flush.

        The last cycle's callers are released by the flush itself, on the flush thread,
        the moment it returns: not after this batch's statements, which may take longer
        than the flush (and were, under load, a cycle's worth of latency added to every
        deferred commit)."""
        assert self._flush is not None
        flushing = flusher.submit(self._flush)
        previous = unflushed

        def released(done: Future[None]) -> None:
            error = done.exception()
            if error is not None:
                # Committed but not known durable: their callers must not be told so.
                self._settle([(future, False, error) for future, _ok, _value in previous])
            else:
                self._settle(previous)

        flushing.add_done_callback(released)

        def flushed() -> None:
            error = flushing.exception()  # waits: the batch's files must be durable first
            if error is not None:
                raise error

        outcomes = self._commit(batch, before_commit=flushed) if batch else []
        # No commit of this cycle waited for the flush (an empty batch, or a failure
        # before the commit): wait here, so that one flush at a time runs and the next
        # cycle's flush starts after everything this one released.
        with contextlib.suppress(BaseException):
            flushing.exception()
        if self._deferred:
            return outcomes
        self._settle(outcomes)
        return []

    @classmethod
    def _prepared(cls, batch: list[tuple[Callable[[Connection], Any], Future[Any]]]
                  ) -> list[tuple[Callable[[Connection], Any], Future[Any]]]:
        """The batch with its `Unprepared` requests made ready (in batch order); those
        whose preparation failed are settled here and left out."""
        groups: dict[Callable[..., Any], list[int]] = {}
        for index, (work, _future) in enumerate(batch):
            if isinstance(work, Unprepared):
                groups.setdefault(work.prepare, []).append(index)
        if not groups:
            return batch
        ready: list[Any] = [work for work, _future in batch]
        for prepare, indexes in groups.items():
            try:
                works = prepare([batch[i][0].payload for i in indexes])  # type: ignore[attr-defined]
                if len(works) != len(indexes):
                    raise RuntimeError("a preparing function returned the wrong number of works")
            except BaseException as exc:
                works = [exc] * len(indexes)
            for i, work in zip(indexes, works, strict=True):
                ready[i] = work
        failed = [(future, False, work) for work, (_w, future) in zip(ready, batch, strict=True)
                  if isinstance(work, BaseException)]
        cls._settle(failed)
        return [(work, future) for work, (_w, future) in zip(ready, batch, strict=True)
                if not isinstance(work, BaseException)]

    @staticmethod
    def _settle(outcomes: list[Outcome]) -> None:
        for future, ok, value in outcomes:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _commit(self, batch: list[tuple[Callable[[Connection], Any], Future[Any]]],
                before_commit: Callable[[], None] | None = None) -> list[Outcome]:
        groups: dict[Callable[..., Any], list[tuple[BatchWork, Future[Any]]]] = {}
        singles: list[tuple[Callable[[Connection], Any], Future[Any]]] = []
        for work, future in batch:
            if isinstance(work, BatchWork) and len(batch) > 1:
                groups.setdefault(work.batch, []).append((work, future))
            else:
                singles.append((work, future))
        try:
            return self._transaction(groups, singles, before_commit)
        except _GroupFailed:
            # A batch call failed as a whole and took the transaction with it: nothing
            # was written; run every request alone, each in its own SAVEPOINT.
            try:
                return self._transaction({}, list(batch), before_commit)
            except BaseException as exc:
                return [(future, False, exc) for _work, future in batch]
        except BaseException as exc:  # the commit itself failed: nobody is durable
            return [(future, False, exc) for _work, future in batch]

    def _transaction(self, groups: dict[Callable[..., Any], list[tuple[BatchWork, Future[Any]]]],
                     singles: list[tuple[Callable[[Connection], Any], Future[Any]]],
                     before_commit: Callable[[], None] | None = None,
                     ) -> list[Outcome]:
        """One write transaction; a group runs without a SAVEPOINT (two statements fewer
        per commit), and if it fails as a whole the transaction is abandoned.
        `before_commit` runs last inside it: if it raises, nothing is committed."""
        outcomes: list[Outcome] = []
        if not groups and len(singles) == 1:
            # Alone in its transaction: no SAVEPOINT needed, a failure rolls back everything.
            work, future = singles[0]
            with self.db.write_connection() as connection:
                outcomes.append((future, True, work(connection)))
                if before_commit is not None:
                    before_commit()
            return outcomes
        with self.db.write_connection() as connection:
            for batch_fn, items in groups.items():
                try:
                    results = batch_fn(connection, [work.payload for work, _future in items])
                except Exception as exc:
                    raise _GroupFailed from exc
                for (_work, future), result in zip(items, results, strict=True):
                    outcomes.append((future, not isinstance(result, BaseException), result))
            for work, future in singles:
                savepoint = connection.begin_nested()
                try:
                    result = work(connection)
                    savepoint.commit()
                    outcomes.append((future, True, result))
                except BaseException as exc:  # this request alone fails
                    savepoint.rollback()
                    outcomes.append((future, False, exc))
            if before_commit is not None:
                before_commit()
        return outcomes


class _GroupFailed(Exception):
    """A batch call raised: its transaction must not be committed."""
