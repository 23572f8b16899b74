"""The store's job table: durable background work, leased to workers.

Why a table and not a queue in memory: a job is inserted in the same transaction as the
message it is about (`enqueue` takes the caller's connection), so a delivery that SMTP
acknowledges has its jobs committed with it, and a job never exists for a message that
was not stored. Connectors (parse HPRIM, drop a file into a practice's folder, MLLP,
FHIR), acknowledgements and any later worker share it.

Life of a job: `pending` -> `running` (claimed with a lease: `lease_owner`,
`lease_until`) -> `done`; or `failed` (waiting for `next_attempt`) and claimed again; or
`dead` (no more retries, kept with its last error until an operator retries it). A
worker that dies leaves its job `running` with a lease that runs out: the job is due
again then. Every call that changes a claimed job names the worker and fails with
`LeaseLost` when the job is no longer that worker's (another took it over), so two
workers never both finish one job.

Claimers: on PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED`, so several `mss serve`
processes take different jobs without waiting on each other; on SQLite the write
transaction (BEGIN IMMEDIATE) already serialises claimers.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mssmail import audit
from mssmail.store.driversql import driver_for
from mssmail.store.errors import StoreError
from mssmail.store.models import Job, table

if TYPE_CHECKING:
    from mssmail.store.api import Actor
    from mssmail.store.service import Store

PENDING, RUNNING, DONE, FAILED, DEAD = "pending", "running", "done", "failed", "dead"
STATES = (PENDING, RUNNING, DONE, FAILED, DEAD)
MAX_KEY = 200
MAX_ERROR = 4000
_J = table(Job)
# The columns `enqueue` writes, in the order of its rows' values (both write paths).
_NEW_COLUMNS = ("kind", "key", "payload", "progress", "state", "attempts", "next_attempt", "lease_owner",
                "lease_until", "last_error", "mailbox", "message_id", "created_at", "finished_at")


# `complete_held`'s statement, built once (a Core statement built per call costs more
# than running it).
_COMPLETE_HELD = (update(_J).where(_J.c.id == bindparam("b_id"), _J.c.state == RUNNING,
                                   _J.c.lease_owner == bindparam("b_owner"))
                  .values(state=DONE, lease_owner=None, lease_until=None,
                          finished_at=bindparam("b_finished", type_=_J.c.finished_at.type),
                          progress=bindparam("b_progress", type_=_J.c.progress.type)))


def _initial_state(job: NewJob, now: datetime) -> tuple[str, int, datetime, str | None, datetime | None]:
    """(state, attempts, next_attempt, lease_owner, lease_until) of a new job: pending,
    or already claimed by `lease_owner` (one attempt, its lease running from now)."""
    run_at = job.run_at or now
    if job.lease_owner is None:
        return PENDING, 0, run_at, None, None
    return RUNNING, 1, run_at, job.lease_owner, now + timedelta(seconds=job.lease_seconds)


def _due(now: datetime) -> tuple[Any, Any]:
    """What makes a job due, as two conditions, each one range of the (kind, state,
    next_attempt) index: pending or failed with `next_attempt` passed; running with its
    lease run out. Queried apart rather than OR-ed: SQLite answered the OR by reading
    every job of the kinds, done ones included (1.2 ms per claim at 6,000 jobs, growing
    with the table: the 5-minute connector bench leaves 30,000)."""
    return (and_(_J.c.state.in_((PENDING, FAILED)), _J.c.next_attempt <= now),
            and_(_J.c.state == RUNNING, _J.c.lease_until < now))


class JobNotFound(StoreError):
    pass


class LeaseLost(StoreError):
    """The job is no longer held by this worker (its lease ran out and another took it)."""


@dataclass(frozen=True)
class NewJob:
    """A job to insert: `key` is unique, so inserting the same work twice is one job."""

    kind: str
    key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    mailbox: str = ""
    message_id: int | None = None
    run_at: datetime | None = None
    # Inserted already claimed: by `lease_owner` for `lease_seconds` (state running, one
    # attempt), with `progress` recorded. For a worker that has done the job's first
    # step in the very transaction that creates it (the connector worker stages a
    # folder target's temp file while routing: connectors/worker.py) and goes on with
    # the job itself after the commit, without a claim of its own.
    progress: Mapping[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_seconds: float = 0.0


@dataclass(frozen=True)
class JobItem:
    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    progress: dict[str, Any]
    state: str
    attempts: int
    next_attempt: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str
    mailbox: str
    message_id: int | None
    created_at: datetime
    finished_at: datetime | None


def job_key(*parts: str | int) -> str:
    """A job key from what identifies the work (e.g. mailbox, Message-ID, part, target):
    the SHA-256 of the parts, so any text fits the column and equal work gets equal keys."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def retry_delay(attempts: int, *, first: float = 30.0, longest: float = 6 * 3600.0,
                rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with full jitter over the upper half: attempt 1 waits about
    `first`, each next one twice as long, never more than `longest`. Jitter spreads the
    retries of jobs that failed together (a peer that was down) instead of a stampede."""
    ceiling = min(longest, first * 2 ** max(attempts - 1, 0))
    spread = (rng or random).uniform(0.5, 1.0)
    return timedelta(seconds=ceiling * spread)


def _connection(conn_or_session: Connection | Session) -> Connection:
    return conn_or_session.connection() if isinstance(conn_or_session, Session) else conn_or_session


def enqueue(conn_or_session: Connection | Session, jobs: NewJob | Sequence[NewJob]) -> int:
    """Insert jobs within the caller's write transaction; how many were new.

    Call it in the transaction that stores the message the jobs are about (a delivery's
    connection, `Store.write_grouped`'s or a `db.write()` session): they commit or roll
    back together. A job whose key exists already is left as it is (idempotent: a
    delivery replayed after a crash does not duplicate its work).
    """
    batch = [jobs] if isinstance(jobs, NewJob) else list(jobs)
    if not batch:
        return 0
    connection = _connection(conn_or_session)
    now = datetime.now(UTC)
    for job in batch:
        if not job.kind or len(job.kind) > 40:
            raise ValueError("a job kind has 1 to 40 characters.")
        if not job.key or len(job.key) > MAX_KEY:
            raise ValueError(f"a job key has 1 to {MAX_KEY} characters (see job_key).")
        if job.lease_owner is not None and not 0 < len(job.lease_owner) <= 200:
            raise ValueError("a worker name has 1 to 200 characters.")
    values: list[tuple[Any, ...]] = [
        (job.kind, job.key, dict(job.payload), dict(job.progress), *_initial_state(job, now), "",
         job.mailbox.strip().lower(), job.message_id, now, None)
        for job in batch]
    driver = driver_for(connection)
    if driver is not None:
        # Deliveries enqueue in the group committer's transaction: one pre-built
        # multi-row statement on the DBAPI cursor (driversql) rather than a Core
        # statement built per row.
        return driver.insert_new(connection, _J, _NEW_COLUMNS, values, "key")
    rows = [dict(zip(_NEW_COLUMNS, row, strict=True)) for row in values]
    dialect = connection.dialect.name
    inserted = 0
    if dialect in ("postgresql", "sqlite"):
        maker = postgresql.insert if dialect == "postgresql" else sqlite.insert
        for row in rows:  # RETURNING says whether the row went in (rowcount is not reliable)
            statement = maker(_J).values(**row).on_conflict_do_nothing(index_elements=["key"])
            inserted += connection.execute(statement.returning(_J.c.id)).first() is not None
        return inserted
    for row in rows:  # any other engine: look first (the unique key still guards)
        if connection.execute(select(_J.c.id).where(_J.c.key == row["key"])).first() is None:
            connection.execute(insert(_J).values(**row))
            inserted += 1
    return inserted


def _item(row: Any) -> JobItem:
    return JobItem(row.id, row.kind, row.key, dict(row.payload or {}), dict(row.progress or {}), row.state,
                   row.attempts, row.next_attempt, row.lease_owner, row.lease_until, row.last_error,
                   row.mailbox, row.message_id, row.created_at, row.finished_at)


class JobOps:
    """Store methods over the job table (mixed into `Store`)."""

    def enqueue_jobs(self: Store, jobs: NewJob | Sequence[NewJob]) -> int:
        """`enqueue` in a transaction of its own (work not tied to a message being stored)."""
        with self.db.write() as s:
            return enqueue(s, jobs)

    def has_due_jobs(self: Store, kinds: Sequence[str], *, now: datetime | None = None) -> bool:
        """Whether a job of these kinds is due (what `claim_jobs` would take), read
        without a write transaction: an idle worker polls with this (on SQLite a claim
        takes the one writer lock, even when there is nothing to claim)."""
        now = now or datetime.now(UTC)
        with self.db.engine.connect() as connection:
            return any(connection.execute(select(_J.c.id).where(_J.c.kind.in_(list(kinds)), due).limit(1)).first()
                       is not None for due in _due(now))

    def claim_jobs(self: Store, kinds: str | Sequence[str], worker: str, lease_seconds: float, *,
                   limit: int = 1, now: datetime | None = None) -> list[JobItem]:
        """Take up to `limit` due jobs of these kinds for `worker`, oldest due first.

        Due: pending or failed with `next_attempt` passed, or running with a lease that ran
        out (its worker died). Each claim counts as an attempt, so a job that kills its
        worker every time still reaches its retry limit.
        """
        if limit <= 0:
            return []
        if not worker or len(worker) > 200:
            raise ValueError("a worker name has 1 to 200 characters.")
        wanted = [kinds] if isinstance(kinds, str) else list(kinds)
        now = now or datetime.now(UTC)
        lease_until = now + timedelta(seconds=lease_seconds)
        with self.db.write() as s:
            connection = s.connection()
            found: list[Any] = []
            for due in _due(now):  # one index range each
                found += connection.execute(
                    select(_J.c.id, _J.c.next_attempt).where(_J.c.kind.in_(wanted), due)
                    .order_by(_J.c.next_attempt, _J.c.id).limit(limit).with_for_update(skip_locked=True)).all()
            ids = [row.id for row in sorted(found, key=lambda row: (row.next_attempt, row.id))[:limit]]
            if not ids:
                return []
            connection.execute(update(_J).where(_J.c.id.in_(ids)).values(
                state=RUNNING, lease_owner=worker, lease_until=lease_until, attempts=_J.c.attempts + 1))
            rows = connection.execute(select(_J).where(_J.c.id.in_(ids))
                                      .order_by(_J.c.next_attempt, _J.c.id)).all()
            return [_item(r) for r in rows]

    def _held(self: Store, connection: Connection, job_id: int, worker: str) -> Any:
        row = connection.execute(select(_J).where(_J.c.id == job_id).with_for_update()).first()
        if row is None:
            raise JobNotFound(f"no job {job_id}.")
        if row.state != RUNNING or row.lease_owner != worker:
            raise LeaseLost(f"job {job_id} is no longer held by {worker}.")
        return row

    def checkpoint_job(self: Store, job_id: int, worker: str, progress: Mapping[str, Any], *,
                       lease_seconds: float | None = None, now: datetime | None = None) -> None:
        """Record a step before taking the next one (e.g. "temp file written and fsynced"),
        merged into the job's `progress`; optionally renew the lease. A worker that takes
        the job over after a crash reads the progress and resumes from there."""
        with self.db.write() as s:
            connection = s.connection()
            row = self._held(connection, job_id, worker)
            values: dict[str, Any] = {"progress": {**(row.progress or {}), **progress}}
            if lease_seconds is not None:
                values["lease_until"] = (now or datetime.now(UTC)) + timedelta(seconds=lease_seconds)
            connection.execute(update(_J).where(_J.c.id == job_id).values(**values))

    def complete_job(self: Store, job_id: int, worker: str, *,
                     progress: Mapping[str, Any] | None = None) -> None:
        """The job is done; LeaseLost if another worker holds it now."""
        with self.db.write() as s:
            connection = s.connection()
            row = self._held(connection, job_id, worker)
            connection.execute(update(_J).where(_J.c.id == job_id).values(
                state=DONE, lease_owner=None, lease_until=None, finished_at=datetime.now(UTC),
                progress={**(row.progress or {}), **(progress or {})}))

    def complete_held(self: Store, done: Sequence[tuple[JobItem, Mapping[str, Any]]], worker: str) -> list[int]:
        """`complete_job` for jobs the worker has in hand (claimed, or inserted already
        claimed), with their progress as it holds it (nobody else writes a held job's
        progress) merged with the new: one prepared UPDATE each that only matches while
        the job is still this worker's, instead of a locking read then an update built
        per call. The ids completed; a job missing from them was taken over (LeaseLost
        for `complete_job`)."""
        completed: list[int] = []
        now = datetime.now(UTC)
        with self.db.write() as s:
            connection = s.connection()
            for job, progress in done:
                result = connection.execute(_COMPLETE_HELD, {
                    "b_id": job.id, "b_owner": worker, "b_finished": now,
                    "b_progress": {**job.progress, **progress}})
                if result.rowcount == 1:
                    completed.append(job.id)
        return completed

    def fail_job(self: Store, job_id: int, worker: str, error: str, *,
                 retry_at: datetime | None = None) -> str:
        """One attempt failed: retried at `retry_at` (state failed), or, without it, a dead
        letter at once (a permanent error, or the retries are used up). The new state."""
        state = FAILED if retry_at is not None else DEAD
        with self.db.write() as s:
            connection = s.connection()
            self._held(connection, job_id, worker)
            values: dict[str, Any] = {"state": state, "lease_owner": None, "lease_until": None,
                                      "last_error": error[:MAX_ERROR]}
            if retry_at is not None:
                values["next_attempt"] = retry_at
            else:
                values["finished_at"] = datetime.now(UTC)
            connection.execute(update(_J).where(_J.c.id == job_id).values(**values))
        return state

    def retry_dead(self: Store, actor: Actor, *, job_id: int | None = None,
                   kind: str | None = None, ip: str = "") -> int:
        """An operator sends dead letters back (one, one kind's, or all): due now, attempts
        counted from zero again. Audited. How many were."""
        with self.db.write() as s:
            connection = s.connection()
            query = select(_J.c.id).where(_J.c.state == DEAD)
            if job_id is not None:
                query = query.where(_J.c.id == job_id)
            if kind is not None:
                query = query.where(_J.c.kind == kind)
            ids = list(connection.execute(query.with_for_update()).scalars())
            if job_id is not None and not ids:
                raise JobNotFound(f"no dead job {job_id}.")
            if ids:
                connection.execute(update(_J).where(_J.c.id.in_(ids)).values(
                    state=PENDING, attempts=0, next_attempt=datetime.now(UTC), finished_at=None))
            audit.record(s, audit.ADMIN, actor=actor.audit_name, ip=ip,
                         message="jobs/" + ("all" if job_id is None else str(job_id)),
                         details={"op": "jobs.retry_dead", "kind": kind, "ids": ids})
            return len(ids)

    @contextmanager
    def _job_reader(self: Store) -> Iterator[Connection]:
        """Where job reads go: the thread's open `db.unit()` if a write began it (so the
        read sees the unit's own changes), else a connection of the pool."""
        joined = self.db.unit_connection()
        if joined is not None:
            yield joined
            return
        with self.db.engine.connect() as connection:
            yield connection

    def get_job(self: Store, job_id: int) -> JobItem:
        with self._job_reader() as connection:
            row = connection.execute(select(_J).where(_J.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"no job {job_id}.")
        return _item(row)

    def jobs_by_key(self: Store, keys: Sequence[str]) -> dict[str, JobItem]:
        """The jobs of these keys that exist (inside a `db.unit()`, as the unit sees them):
        whether a job was inserted by this transaction or was there already, and its id."""
        found: dict[str, JobItem] = {}
        wanted = list(dict.fromkeys(keys))
        with self._job_reader() as connection:
            for start in range(0, len(wanted), 500):
                for row in connection.execute(select(_J).where(_J.c.key.in_(wanted[start:start + 500]))).all():
                    found[row.key] = _item(row)
        return found

    def list_jobs(self: Store, *, kind: str | None = None, state: str | None = None,
                  message_id: int | None = None, limit: int = 100) -> list[JobItem]:
        """Jobs by id, newest first (for `mss connector jobs` and tests)."""
        if state is not None and state not in STATES:
            raise ValueError(f"a job state is one of {', '.join(STATES)}.")
        query = select(_J).order_by(_J.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(_J.c.kind == kind)
        if state is not None:
            query = query.where(_J.c.state == state)
        if message_id is not None:
            query = query.where(_J.c.message_id == message_id)
        with self._job_reader() as connection:
            return [_item(r) for r in connection.execute(query).all()]


__all__ = ["DEAD", "DONE", "FAILED", "PENDING", "RUNNING", "JobItem", "JobNotFound", "JobOps", "LeaseLost",
           "NewJob", "enqueue", "job_key", "retry_delay"]
