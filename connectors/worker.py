"""The connector worker (`mss serve` component `connectors`): routes delivered messages
and delivers their parts to the targets, from the store's job table.

Two job kinds:
- `connector.route`, inserted by the delivery in its own transaction for a mailbox that
  has rules (`mssmail.store.connectors.route_jobs`): read the message through the store
  API as `system:connectors` (an audited read), find the HPRIM / CDA / XDM files
  (attachments, or HPRIM Net as the text body), parse them with `connectors.formats`,
  tag the message (`$HPRIM` / `$DLU`, `extra["documents"]`), and insert one
  `connector.deliver` job per part and target, keyed sha256(mailbox, Message-ID or body
  digest, part, target) so a route job run twice inserts nothing twice. A file that
  does not parse goes to `DATA/connectors/quarantine/<key>/` with `error.json`; only
  that file fails.
- `connector.deliver`: write the part's bytes (kept in the blob store, so a dead job
  keeps its input) to the target; `connectors.folder` makes that exactly once. A folder
  target's job is usually carried by the route step itself: its temp file is written
  and fsynced while routing and the job inserted already claimed, with that step
  recorded, in the route's commit; right after that commit the file is renamed into
  place, and the deliveries of a claimed batch are completed in one commit at its end
  (`_publish`, `_complete_published`). No claim and no checkpoint commit of its own: a
  message costs about 1.5 commits instead of 3.5. A crash anywhere leaves the job to
  its lease, then to `_deliver`, which resumes from the recorded temp file.

Failures: temporary ones are retried with exponential backoff and jitter
(`[connectors] retry_initial` to `retry_max_interval`) until `max_age` after the job
was created, then the job is dead; permanent ones are dead at once. Jobs run one at a
time on a thread of their own: the event loop only polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors import acknowledge, folder, mllp, network, routing
from connectors.formats import ParseError, ins_check, parse_content
from connectors.formats.hl7v2 import Hl7Options, oru_r01_from_hprim_net, oru_r01_from_hprim_sante
from connectors.formats.hprim_net import HprimNetFile
from connectors.formats.hprim_out import render_dlu, render_hprim_sante_patient, render_record
from connectors.formats.hprim_sante import HprimSanteFile
from connectors.formats.summary import parts as content_parts
from connectors.pickup import PickupScanner
from connectors.results import entry_for
from mssmail import logs
from mssmail.store import mimeview, query
from mssmail.store.actors import Actor
from mssmail.store.connectors import DELIVER_KIND, INDEX_KIND, MDN_KIND, ROUTE_KIND
from mssmail.store.jobs import DONE, JobItem, LeaseLost, NewJob, job_key, retry_delay

log = logging.getLogger("mss.connectors")
ACTOR = Actor.system("connectors")
# Fault injection for the crash tests: MSS_FAULT=connectors.after_temp makes the process
# kill itself (SIGKILL) between "temp file recorded" and the rename.
FAULT_ENV = "MSS_FAULT"
DLU_CODES = ("74207-2", "34133-9")
# Jobs taken per claim: one claim (a write transaction) for several jobs. A job of the
# batch not yet started when less than half its lease is left gets its lease renewed
# first (`_still_held`), so a batch never starts what another worker may be taking over.
CLAIM_BATCH = 4


@dataclasses.dataclass
class _Staged:
    """A folder delivery staged by a route step: its temp file, written and fsynced, and
    (once the route's transaction has it) the job inserted as ours with it recorded."""

    key: str
    tmp: Path
    final: Path
    data: bytes
    job: JobItem | None = None
    outcome: str = ""
    # When the route made no delivery but the ones it staged (all ours): the route job as
    # committed, and how many they are, so their completion can conclude the
    # acknowledgement with what it has in hand (`Acknowledger.conclude`).
    route: JobItem | None = None
    siblings: int = 0


class ConnectorWorker:
    name = "connectors"

    def __init__(self, config: Any, store: Any) -> None:
        self.config = config
        self.settings = config.connectors
        self.store = store
        self._name = f"{socket.gethostname()}:{os.getpid()}:connectors"
        self._local = threading.local()
        self.quarantine = Path(config.server.data) / "connectors" / "quarantine"
        # `[connectors] workers` job loops, each on a thread of its own (fsync-bound: jobs
        # overlap their commits; PostgreSQL groups them).
        self.threads = max(1, int(getattr(self.settings, "workers", 1)))
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="connectors")
        self._task: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._pickup: asyncio.Task[None] | None = None
        self._stopping = False
        # The job loops waiting for work (each its own event), and whether a wake-up
        # came while none was waiting (see `_wake_one`).
        self._idle: list[asyncio.Event] = []
        self._wanted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Any = None
        self.actor = ACTOR
        self.acks = acknowledge.Acknowledger(self)

    @property
    def worker(self) -> str:
        """The lease owner: one name per job thread (`host:pid:connectors[:n]`), so a job
        taken over by another thread of this process is never finished by the first."""
        return getattr(self._local, "name", self._name)

    @worker.setter
    def worker(self, name: str) -> None:
        self._name = name

    def _run_once_as(self, index: int) -> int:
        """`run_once` on job thread `index`: how many jobs it claimed."""
        if index:
            self._local.name = f"{self._name}:{index}"
        self._local.claimed = 0
        self.run_once()
        return int(self._local.claimed)

    def wake(self) -> None:
        """More work is due (called from any thread)."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._wake_one)

    def _wake_one(self) -> None:
        """Wake ONE waiting job loop (on the event loop). Waking them all for each new
        message made every idle loop claim, and all but one claimed nothing: an empty
        write transaction each, several per message at 50 messages/s. A loop that
        claims a full batch wakes the next (a backlog gets more threads); with none
        waiting, the next loop to end its batch claims again (`_wanted`)."""
        if self._idle:
            self._idle.pop().set()
        else:
            self._wanted = True

    def run_async(self, coro: Any, timeout: float) -> Any:
        """A coroutine of the serving process (the submission path) from the worker thread."""
        return acknowledge.run_coroutine(self._loop, coro, timeout)

    async def start(self) -> list[str]:
        self._loop = asyncio.get_running_loop()
        # New mail wakes the job loops at once (a route job was committed with it)
        # instead of at their next poll: the poll stays for retries and other processes.
        self._unsubscribe = self.store.changes.subscribe_all(self._on_change)
        self._task = asyncio.create_task(self._run(), name="connectors-poller")
        self._loops = [asyncio.create_task(self._run(i), name=f"connectors-poller-{i}") for i in range(1, self.threads)]
        self._pickup = asyncio.create_task(PickupScanner(self.config, self.store).run(
            self.settings.poll_interval, lambda: self._stopping), name="connectors-pickup")
        return [f"connectors: job worker ({self.threads} thread{'s' if self.threads > 1 else ''}, poll every "
                f"{self.settings.poll_interval}s, lease "
                f"{self.settings.lease}s)"]

    def _on_change(self, event: Any) -> None:
        if event.kind == "new":
            self.wake()

    async def stop(self, grace: float) -> None:
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for event in self._idle:
            event.set()
        for task in (self._task, self._pickup, *self._loops):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, timeout=grace)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, index: int = 0) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            claimed = 0
            self._wanted = False  # this claim sees whatever was committed before it
            try:
                claimed = await loop.run_in_executor(self._executor, self._run_once_as, index)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("connectors: polling the job table failed")
            if claimed:
                if claimed >= CLAIM_BATCH:
                    self._wake_one()  # a backlog: another loop helps
                continue
            if self._wanted:  # work came while this loop was claiming
                continue
            event = asyncio.Event()
            self._idle.append(event)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=self.settings.poll_interval)
            finally:
                with contextlib.suppress(ValueError):
                    self._idle.remove(event)

    # --- one job (blocking, on the worker thread) --------------------------------------
    def run_once(self, now: datetime | None = None) -> bool:
        """Claim and run a batch of due jobs; whether there was one. The folder files
        the batch's route steps published are completed together at the end."""
        jobs = self.store.claim_jobs([ROUTE_KIND, INDEX_KIND, DELIVER_KIND, MDN_KIND], self.worker,
                                     self.settings.lease, limit=CLAIM_BATCH, now=now)
        self._local.claimed = len(jobs)
        published: list[_Staged] = []
        self._local.published = published
        self._local.rules = {}
        try:
            routes = [job for job in jobs if job.kind in (ROUTE_KIND, INDEX_KIND)]
            if len(routes) > 1:
                self._route_batch(routes)
                self._run_each([job for job in jobs if job.kind not in (ROUTE_KIND, INDEX_KIND)], fresh=False)
            else:
                self._run_each(jobs, fresh=True)
        finally:
            self._local.published = self._local.rules = None
            self._complete_published(published)
        return bool(jobs)

    def _rules(self, mailbox: str) -> list[Any]:
        """The mailbox's rules, read once per claimed batch (its messages are mostly for
        one mailbox; a rule changed meanwhile applies from the next batch, milliseconds
        later, as it would to a message routed a moment later)."""
        cache: dict[str, list[Any]] | None = getattr(self._local, "rules", None)
        if cache is None:
            found: list[Any] = self.store.connector_rules(mailbox)
            return found
        if mailbox not in cache:
            cache[mailbox] = self.store.connector_rules(mailbox)
        rules: list[Any] = cache[mailbox]
        return rules

    def _run_each(self, jobs: list[JobItem], *, fresh: bool) -> None:
        """Run claimed jobs one after the other; each but a `fresh` first one (just
        claimed) only if it is still ours (`_still_held`) and the worker is not stopping:
        otherwise it is left to its lease, taken again once that runs out."""
        for index, job in enumerate(jobs):
            if (index or not fresh) and (self._stopping or not self._still_held(job)):
                continue
            self.run_job(job)

    def _still_held(self, job: JobItem) -> bool:
        """Whether a job claimed in a batch may start now: its lease has at least half
        left, or renewing it succeeded (LeaseLost: another worker has it)."""
        until = job.lease_until
        if until is not None:
            until = until if until.tzinfo is not None else until.replace(tzinfo=UTC)
            if until - datetime.now(UTC) > timedelta(seconds=self.settings.lease / 2):
                return True
        try:
            self.store.checkpoint_job(job.id, self.worker, {}, lease_seconds=self.settings.lease)
        except LeaseLost:
            return False
        return True

    def run_job(self, job: JobItem) -> None:
        try:
            if job.kind in (ROUTE_KIND, INDEX_KIND):
                self._route(job)
            elif job.kind == MDN_KIND:
                self.acks.run(job)
            else:
                self._deliver(job)
        except LeaseLost:
            log.warning("connectors: job %s was taken over by another worker", job.id)
        except folder.PermanentError as exc:
            self._dead(job, str(exc), exc.code)
        except (folder.TemporaryError, OSError) as exc:
            self._retry(job, str(exc))
        except Exception as exc:  # a bug must not hold the job: retried, then dead
            log.exception("connectors: job %s failed unexpectedly", job.id)
            self._retry(job, f"{type(exc).__name__}: {exc}")

    def _retry(self, job: JobItem, error: str) -> None:
        now = datetime.now(UTC)
        delay = retry_delay(job.attempts, first=self.settings.retry_initial,
                            longest=self.settings.retry_max_interval)
        if now + delay > job.created_at + timedelta(seconds=self.settings.max_age) \
                or job.attempts >= self.settings.max_attempts:
            self._dead(job, error)
            return
        self.store.fail_job(job.id, self.worker, error, retry_at=now + delay)
        self.store.connector_audit(ACTOR, "connector.retry", mailbox=job.mailbox, message=f"job/{job.id}",
                                   details={**_job_fields(job), "attempts": job.attempts, "error": _public(error),
                                            "retry_in": int(delay.total_seconds())})
        logs.event("connector.retry", level=logging.WARNING, job=job.id, key=job.key[:16],
                   attempts=job.attempts, reason=_public(error))

    def _dead(self, job: JobItem, error: str, code: int | None = None) -> None:
        from connectors import mdn

        code = code or mdn.OTHER
        self.store.checkpoint_job(job.id, self.worker, {"error_code": code})
        self.store.fail_job(job.id, self.worker, error)
        self.store.connector_audit(ACTOR, "connector.dead", mailbox=job.mailbox, message=f"job/{job.id}",
                                   details={**_job_fields(job), "job_kind": job.kind, "attempts": job.attempts,
                                            "error": _public(error), "error_code": code})
        logs.event("connector.dead", level=logging.ERROR, job=job.id, key=job.key[:16], reason=_public(error))
        if job.kind == DELIVER_KIND:
            self.acks.check(job.payload.get("route_job"))

    # --- routing -------------------------------------------------------------------------
    def _route(self, job: JobItem) -> None:
        # Every write of the route step (the audited read, the audit events, flags,
        # documents, results index, delivery jobs, completion) in one transaction: one
        # commit instead of ten, and a kill leaves the message either routed or not at all.
        staged: list[_Staged] = []
        with self.store.db.unit(savepoints=False), self.store.connector_audit_batch():
            routed, pending = self._route_unit(job, staged)
        self._after_route(job, routed, pending, staged)

    def _route_batch(self, jobs: list[JobItem]) -> None:
        """The route steps of a claimed batch in ONE transaction (one commit, one write
        of their audit events), their files published after it. If any of them fails,
        the whole transaction is rolled back and each is routed on its own, as `run_job`
        does (so a bad message fails only itself; the staged temp files of the rolled
        back attempt were never recorded, and the same attempt writes them again)."""
        done: list[tuple[JobItem, bool, int, list[_Staged]]] = []
        try:
            with self.store.db.unit(savepoints=False), self.store.connector_audit_batch():
                for job in jobs:
                    staged: list[_Staged] = []
                    done.append((job, *self._route_unit(job, staged), staged))
        except Exception:
            log.info("connectors: a batch of %d route jobs failed together; each is run on its own", len(jobs))
            self._run_each(jobs, fresh=True)
            return
        for job, routed, pending, staged in done:
            self._after_route(job, routed, pending, staged)

    def _after_route(self, job: JobItem, routed: bool, pending: int, staged: list[_Staged]) -> None:
        """After the route's commit: its staged files published (or removed, when the
        job was another route's), the acknowledgement check, the loops woken."""
        mine = [s for s in staged if s.job is not None]
        for item in staged:
            if item.job is None:  # another route of the message has the job: not ours to publish
                item.tmp.unlink(missing_ok=True)
        published = self._publish(mine)
        sink = getattr(self._local, "published", None)
        if sink is None:
            self._complete_published(published)
        else:
            sink.extend(published)
        # An index job routes nothing, so acknowledges nothing; the deliveries published
        # here check when they are completed.
        if routed and job.kind == ROUTE_KIND and not mine:
            self.acks.check(job.id)
        if pending:  # jobs left for the loops to claim (network targets, a folder not staged)
            self.wake()

    def _route_unit(self, job: JobItem, staged: list[_Staged]) -> tuple[bool, int]:
        """The route step inside `_route`'s unit: whether the message was routed (so an
        acknowledgement may be due), and how many of the jobs it inserted are pending
        (the folder deliveries it staged, appended to `staged`, are not)."""
        located = self.store.locate_message(job.message_id) if job.message_id is not None else None
        if located is None:
            self.store.connector_audit(ACTOR, "connector.routed", mailbox=job.mailbox, message=f"job/{job.id}",
                                       details={"key": job.key, "outcome": "message gone"})
            self.store.complete_job(job.id, self.worker, progress={"outcome": "message gone"})
            return False, 0
        # An index job (a mailbox without rules): parse, tag and index, route nowhere.
        rules = [r for r in self._rules(located.mailbox) if r.target_type != "pickup"] \
            if job.kind == ROUTE_KIND else []
        ref = self.store.open_folder(ACTOR, located.mailbox, located.folder)
        view = self.store.message_view(ref, located.uid, mark_seen=False)
        raw = view.raw
        where = ref.ref(located.uid)
        identity = located.message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
        self.store.connector_audit(ACTOR, "connector.received", mailbox=located.mailbox, message=where,
                                   details={"key": job.key, "size": len(raw), "sha256": located.sha256,
                                            "message_id": located.message_id})
        tree = mimeview.parse_tree(raw)  # once, for the acknowledgement's fields and the candidates
        ack_fields, original = acknowledge.original_fields(raw, job.payload.get("return_path", ""), identity, tree)
        if original.is_report or original.auto_replied:
            # An MDN, a DSN or an automatic reply (ours re-attach the original files):
            # never integrated again and never acknowledged (RFC 8098 2.1, RFC 3834).
            self.store.connector_audit(ACTOR, "connector.routed", mailbox=located.mailbox, message=where,
                                       details={"key": job.key, "outcome": "report or automatic reply: not routed",
                                                "message_id": located.message_id})
            self.store.complete_job(job.id, self.worker, progress={"outcome": "report"})
            return False, 0
        failures: list[dict[str, Any]] = []
        sender = _sender(view)
        codecda = routing.codecda_values(view.headers)
        files = _candidates(raw, tree)
        documents: list[dict[str, Any]] = []
        entries = []
        keywords: set[str] = set()
        new_jobs: list[NewJob] = []
        folder_data: dict[str, bytes] = {}  # folder deliveries' bytes, by job key (for `_stage`)
        unmatched = 0
        whole_files: set[tuple[int, str, str]] = set()
        for candidate in files:
            digest = hashlib.sha256(candidate.data).hexdigest()
            try:
                result = parse_content(candidate.data)
            except ParseError as exc:
                # Quarantine (and MDN 906) is for what was sent to a connector; in a
                # mailbox without rules a .txt or .zip that is not HPRIM is just an attachment.
                if job.kind == ROUTE_KIND:
                    self._quarantine(job, located.mailbox, where, identity, candidate, exc)
                    failures.append({"code": 906, "detail": f"file {candidate.index}: {exc.describe()}"})
                continue
            found = content_parts(result)
            container = "xdm" if not isinstance(result, HprimNetFile | HprimSanteFile) and \
                type(result).__name__ == "XdmPackage" else ""
            self.store.connector_audit(ACTOR, "connector.parsed", mailbox=located.mailbox, message=where,
                                       details={"key": job.key, "file": candidate.index, "source": candidate.source,
                                                "format": type(result).__name__, "parts": len(found),
                                                "size": len(candidate.data), "sha256": digest,
                                                "message_id": located.message_id,
                                                "ins": self._ins_hashes(found),
                                                "warnings": len(getattr(result, "warnings", ()) or ())})
            for part in found:
                documents.append(routing.part_summary(part, container, candidate.source))
                entries.append(entry_for(part, file_index=candidate.index, source=candidate.source,
                                         filename=candidate.filename, container=container))
                keywords.add("$DLU" if part.kind.startswith("cda:") and part.kind[4:] in DLU_CODES
                             else "$HPRIM" if part.kind.startswith("hprim") else "")
                rule = routing.first_match(rules, kind=part.kind, container=container, sender=sender,
                                          codecda=codecda)
                if rule is None:
                    unmatched += 1
                    continue
                refused = ins_check.refusal(result, part) if rule.options.get("require_ins") == "true" else None
                if refused is not None:  # 903/904/905 decided here (connectors/formats/ins_check.py)
                    failures.append({"code": refused[0], "detail": f"file {candidate.index}: {refused[1]}"})
                    self.store.connector_audit(ACTOR, "connector.routed", mailbox=located.mailbox, message=where,
                                               details={"key": job.key, "rule": rule.id, "kind": part.kind,
                                                        "outcome": f"refused {refused[0]}"})
                    continue
                for target in rule.targets:
                    if rule.target_type in network.TYPES:
                        new_jobs += network.route(self, job, located, identity, raw, result, part,
                                                  candidate, rule, target, where)
                        continue
                    if rule.target_type == "mllp":
                        key = job_key(located.mailbox, identity, f"{candidate.index}.{part.index}",
                                      f"mllp:{target}")
                        try:
                            data = _render_hl7(result, part, key, job.created_at)
                        except ValueError as exc:
                            self.store.connector_audit(
                                ACTOR, "connector.routed", mailbox=located.mailbox, message=where,
                                details={"key": key, "rule": rule.id, "outcome": str(exc), "kind": part.kind})
                            continue
                        new_jobs.append(self._deliver_job(job, located.mailbox, key, rule, target, data,
                                                          f"{candidate.index}.{part.index}", part.kind, ""))
                        continue
                    data, extension, whole = _render(result, part, candidate.data, rule.options)
                    if whole and (candidate.index, rule.target_type, target) in whole_files:
                        continue  # the file as it came: one delivery, whatever its parts
                    whole_files.add((candidate.index, rule.target_type, target))
                    key = job_key(located.mailbox, identity, f"{candidate.index}.{0 if whole else part.index}",
                                  f"{rule.target_type}:{target}")
                    name = routing.output_name(job.created_at, part.sender or sender.partition("@")[0],
                                               part.patient.family, key, rule.options.get("extension", extension))
                    new_jobs.append(self._deliver_job(job, located.mailbox, key, rule, target, data,
                                                      f"{candidate.index}.{part.index}", part.kind, name))
                    if rule.target_type == "folder":
                        folder_data[key] = data
        new_jobs = list({new.key: new for new in new_jobs}.values())  # smtp/imap: one per message
        for new in new_jobs:
            self.store.connector_audit(ACTOR, "connector.routed", mailbox=located.mailbox, message=where,
                                       details={"key": new.key, "rule": new.payload["rule"],
                                                "message_id": located.message_id, "outcome": "job",
                                                "size": new.payload["size"], "sha256": new.payload["input_sha256"],
                                                "type": new.payload["type"], "target": new.payload["target"],
                                                "part": new.payload["part"], "kind": new.payload["kind"]})
        keywords.discard("")
        if keywords:
            self.store.set_flags(ref, [located.uid], "+", sorted(keywords))
        if documents:
            self.store.set_documents(job.message_id, documents)
        if entries:
            self.store.index_results(ACTOR, located.mailbox, sha256=located.sha256,
                                     message_id=located.message_id, received_at=job.created_at, entries=entries)
        new_jobs = self._stage(job, new_jobs, folder_data, staged)
        inserted = self.store.enqueue_jobs(new_jobs) if new_jobs else 0
        if staged:  # ours if this transaction inserted it (not when another route of the message had)
            held = self.store.jobs_by_key([item.key for item in staged])
            for item in staged:
                found = held.get(item.key)
                if found is not None and found.lease_owner == self.worker and found.progress.get("tmp") == str(item.tmp):
                    item.job = found
        if not new_jobs and job.kind == ROUTE_KIND:
            self.store.connector_audit(ACTOR, "connector.routed", mailbox=located.mailbox, message=where,
                                       details={"key": job.key, "outcome": "no matching rule",
                                                "files": len(files), "parts": len(documents)})
        logs.event("connector.routed", job=job.id, mailbox=located.mailbox, files=len(files),
                   parts=len(documents), jobs=len(new_jobs), unmatched=unmatched)
        progress = {"files": len(files), "parts": len(documents), "jobs": len(new_jobs), "inserted": inserted,
                    "ack": ack_fields, "failures": failures}
        if not self.store.complete_held([(job, progress)], self.worker):
            raise LeaseLost(f"job {job.id} is no longer held by {self.worker}.")  # the unit rolls back
        mine = [item for item in staged if item.job is not None]
        if job.kind == ROUTE_KIND and mine and len(mine) == len(new_jobs):
            done = dataclasses.replace(job, state=DONE, progress={**job.progress, **progress})
            for item in mine:
                item.route, item.siblings = done, len(mine)
        return True, inserted - len(mine)

    def _stage(self, job: JobItem, new_jobs: list[NewJob], folder_data: dict[str, bytes],
               staged: list[_Staged]) -> list[NewJob]:
        """Steps 1 and 2 of each new folder delivery, inside the route's transaction
        (connectors/folder.py): the temp file written and fsynced (each temp folder once),
        and the job to insert already ours, with the temp file recorded. Not when the
        folder cannot take the file now (the job then goes the usual way: claimed,
        retried, dead-lettered). The jobs to insert; `staged` gets the files. A job that
        exists already (the message sent twice) is not inserted again, so its staged
        file is not ours (`_route` removes it): the temp name is this route job's own,
        never the one the first route recorded, so nothing is written over that one,
        and one left by a crash before the removal is never published (not recorded)."""
        if not folder_data:
            return new_jobs
        out: list[NewJob] = []
        for new in new_jobs:
            data = folder_data.get(new.key)
            if data is None:
                out.append(new)
                continue
            directory = Path(new.payload["target"])
            try:
                tmp = folder.stage(directory, new.payload["name"], data, job.id, job.attempts)
            except (folder.PermanentError, folder.TemporaryError):
                out.append(new)
                continue
            final = directory / new.payload["name"]
            out.append(dataclasses.replace(new, progress={"tmp": str(tmp), "final": str(final)},
                                           lease_owner=self.worker, lease_seconds=self.settings.lease))
            staged.append(_Staged(new.key, tmp, final, data))
        folder.sync_directories(item.tmp.parent for item in staged)
        return out

    def _publish(self, staged: list[_Staged]) -> list[_Staged]:
        """Step 3 of the staged deliveries, after the route's commit: each temp file
        renamed into place (`MSS_FAULT=connectors.after_temp` kills the process just
        before). Those published, for `_complete_published`; a permanent error (another
        file has the name) makes the job dead, a temporary one a retry, as in `_deliver`."""
        published: list[_Staged] = []
        fault = _fault("connectors.after_temp")
        for item in staged:
            assert item.job is not None
            if fault is not None:
                fault()
            try:
                item.outcome = folder.publish_staged(item.tmp, item.final, item.data)
            except folder.PermanentError as exc:
                self._dead(item.job, str(exc), exc.code)
                continue
            except folder.TemporaryError as exc:
                self._retry(item.job, str(exc))
                continue
            published.append(item)
        return published

    def _complete_published(self, published: list[_Staged]) -> None:
        """The published deliveries done: their folders fsynced (once each), then in one
        commit their completions, their `connector.delivered` events and (SQLite) the
        acknowledgement checks of their messages (see `_delivered`). A job another worker
        took over meanwhile (its lease ran out) is left to it: that worker finds the temp
        file gone and completes it as delivered before."""
        if not published:
            return
        folder.sync_directories(item.final.parent for item in published)
        joined = self.store.db.is_sqlite
        routes: list[Any] = []
        done: list[_Staged] = []
        with self.store.db.unit(savepoints=False), self.store.connector_audit_batch():
            completed = set(self.store.complete_held(
                [(item.job, {"outcome": item.outcome}) for item in published if item.job is not None], self.worker))
            for item in published:
                job = item.job
                assert job is not None
                if job.id not in completed:
                    log.warning("connectors: job %s was taken over by another worker", job.id)
                    continue
                payload = job.payload
                self.store.connector_audit(ACTOR, "connector.delivered", mailbox=job.mailbox,
                                           message=f"job/{job.id}",
                                           details={"key": job.key, "type": "folder", "target": payload["target"],
                                                    "message_id": payload.get("message_id", ""),
                                                    "outcome": item.outcome, "size": len(item.data),
                                                    "sha256": payload["input_sha256"], "attempts": job.attempts})
                done.append(item)
                if payload.get("route_job") not in routes:
                    routes.append(payload.get("route_job"))
            # A route whose deliveries are all among these: concluded here, on either
            # database (no other worker has any of them); else the usual check.
            for route in list(routes):
                mine = [item for item in done if item.job is not None and item.job.payload.get("route_job") == route]
                known = mine[0].route if mine else None
                if known is not None and len(mine) == mine[0].siblings:
                    routes.remove(route)
                    self.acks.conclude(known, [dataclasses.replace(
                        item.job, state=DONE, progress={**item.job.progress, "outcome": item.outcome})
                        for item in mine if item.job is not None])
                elif joined:
                    self.acks.check(route)
        if not joined:
            for route in routes:
                self.acks.check(route)
        for item in done:
            assert item.job is not None
            logs.event("connector.delivered", job=item.job.id, key=item.job.key[:16],
                       target=item.job.payload["target"], outcome=item.outcome)

    def _deliver_job(self, job: JobItem, mailbox: str, key: str, rule: Any, target: str, data: bytes,
                     part: str, kind: str, name: str) -> NewJob:
        """A delivery job; its bytes go to the blob store first (a dead job keeps its input,
        and a retry sends the very same bytes: the same MSH-10 for MLLP)."""
        sha = self.store.blobs.put(data)
        return NewJob(kind=DELIVER_KIND, key=key, mailbox=mailbox, message_id=job.message_id,
                      payload={"type": rule.target_type, "target": target, "name": name, "input_sha256": sha,
                               "size": len(data), "rule": rule.id, "part": part, "kind": kind,
                               "route_job": job.id, "message_id": job.payload.get("message_id", ""),
                               "options": dict(rule.options)})

    def _ins_hashes(self, found: Any) -> list[str]:
        """The INS of the parts as keyed hashes (HMAC-SHA256 under `DATA/connectors/ins-hash.key`,
        made on first use, mode 0600): an auditor can tell two events are about the same
        patient, and nobody can read the INS back nor confirm a guess without the key."""
        import hmac

        ins = sorted({p.patient.ins for p in found if p.patient.ins})
        if not ins:
            return []
        key = _hash_key(Path(self.config.server.data) / "connectors" / "ins-hash.key")
        return [hmac.new(key, b"mss-connector-ins\n" + value.encode(), "sha256").hexdigest()[:32] for value in ins]

    def _quarantine(self, job: JobItem, mailbox: str, where: str, identity: str,
                    candidate: routing.CandidateFile, exc: ParseError) -> None:
        key = job_key(mailbox, identity, str(candidate.index), "quarantine")
        directory = self.quarantine / key
        directory.mkdir(parents=True, exist_ok=True)
        name = routing._ascii_word(Path(candidate.filename).stem, 60) + Path(candidate.filename).suffix[:10]
        (directory / (name if candidate.filename else "body.txt")).write_bytes(candidate.data)
        report = {**exc.to_dict(), "mailbox": mailbox, "message": where, "message_id": identity,
                  "file": candidate.index, "source": candidate.source, "filename": candidate.filename,
                  "size": len(candidate.data), "sha256": hashlib.sha256(candidate.data).hexdigest()}
        (directory / "error.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        self.store.connector_audit(ACTOR, "connector.quarantined", mailbox=mailbox, message=where,
                                   details={"key": key, "route_job": job.key, "file": candidate.index,
                                            "error_kind": exc.kind, "line": exc.line, "field": exc.field,
                                            "size": len(candidate.data), "sha256": report["sha256"],
                                            "message_id": identity, "outcome": "quarantined", "error_code": 906})
        logs.event("connector.quarantined", level=logging.WARNING, mailbox=mailbox, key=key[:16],
                   line=exc.line, field=exc.field)

    # --- delivery ------------------------------------------------------------------------
    def _deliver(self, job: JobItem) -> None:
        payload = job.payload
        if payload.get("type") in network.TYPES:
            network.deliver(self, job)
            return
        if payload.get("type") not in ("folder", "mllp"):
            raise folder.PermanentError(f"target type {payload.get('type')!r} is not available in this build")
        sha = payload["input_sha256"]
        if not self.store.blobs.exists(sha):
            raise folder.PermanentError(f"the job's input {sha[:12]} is missing from the blob store")
        data = self.store.blobs.read(sha)
        if payload["type"] == "mllp":
            self._deliver_mllp(job, data, sha)
            return

        def record(step: dict[str, Any]) -> None:
            self.store.checkpoint_job(job.id, self.worker, step, lease_seconds=self.settings.lease)

        outcome = folder.deliver(Path(payload["target"]), payload["name"], data, job.progress, record,
                                 after_record=_fault("connectors.after_temp"))
        self._delivered(job, {"outcome": outcome},
                        {"key": job.key, "type": "folder", "target": payload["target"],
                         "message_id": payload.get("message_id", ""), "outcome": outcome, "size": len(data),
                         "sha256": sha, "attempts": job.attempts})
        logs.event("connector.delivered", job=job.id, key=job.key[:16], target=payload["target"], outcome=outcome)

    def _delivered(self, job: JobItem, progress: dict[str, Any], details: dict[str, Any]) -> None:
        """A delivery job is done: its completion, its `connector.delivered` event and,
        on SQLite, the acknowledgement check (its "not asked" event or its MDN job) in
        one commit. On SQLite writers take turns under one lock, so the check, reading
        inside this transaction, sees every other delivery of the message as committed or
        not begun. On PostgreSQL two deliveries of a message may commit concurrently and
        neither would see the other done: the check runs after the commit there."""
        joined = self.store.db.is_sqlite
        with self.store.db.unit(savepoints=False):
            self.store.complete_job(job.id, self.worker, progress=progress)
            self.store.connector_audit(ACTOR, "connector.delivered", mailbox=job.mailbox, message=f"job/{job.id}",
                                       details=details)
            if joined:
                self.acks.check(job.payload.get("route_job"))
        if not joined:
            self.acks.check(job.payload.get("route_job"))


    def _deliver_mllp(self, job: JobItem, data: bytes, sha: str) -> None:
        try:
            ack = mllp.deliver(job.payload["target"], data, self.settings.mllp_timeout,
                               job.payload.get("options") or {})
        except mllp.MllpError as exc:
            raise folder.TemporaryError(str(exc)) from exc
        sent_id = mllp.control_id(data)
        if ack.permanent:
            from connectors import mdn

            raise folder.PermanentError(f"{ack.code} for {sent_id}: {ack.text or 'refused by the receiver'}",
                                        mdn.code_in(ack.error_code))
        if not ack.accepted:
            raise folder.TemporaryError(f"{ack.code} for {sent_id}: {ack.text or 'rejected for now'}")
        self._delivered(job, {"outcome": ack.code, "control_id": sent_id},
                        {"key": job.key, "type": "mllp", "target": job.payload["target"],
                         "message_id": job.payload.get("message_id", ""), "outcome": ack.code,
                         "control_id": sent_id, "size": len(data), "sha256": sha, "attempts": job.attempts})
        logs.event("connector.delivered", job=job.id, key=job.key[:16], target=job.payload["target"],
                   outcome=ack.code)


def _public(error: str) -> str:
    """What the audit and the logs keep of an error: our own words, before the peer's text
    (an ACK's or an OperationOutcome's text after ': ' may name the patient). The job's
    last error keeps all of it for the operator (`mss connector jobs --show`)."""
    return error.split(": ", 1)[0][:300]


def _hash_key(path: Path) -> bytes:
    """32 random bytes kept in `path` (created once, 0600, never logged)."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = os.urandom(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret.hex() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # whole or absent: another worker never reads half a key
        except FileExistsError:  # another worker made it first
            return bytes.fromhex(path.read_text().strip())
        finally:
            tmp.unlink(missing_ok=True)
        return secret


def _job_fields(job: JobItem) -> dict[str, Any]:
    """What every delivery event names: the job key, the target, the message and the input."""
    payload = job.payload
    return {"key": job.key, "type": payload.get("type"), "target": payload.get("target"),
            "message_id": payload.get("message_id", ""), "size": payload.get("size"),
            "sha256": payload.get("input_sha256")}


def _render_hl7(result: Any, part: Any, key: str, created: datetime) -> bytes:
    """ORU^R01 v2.5 of an HPRIM part, MSH-10 from the job key and MSH-7 from the job's
    creation: rendered once, so every retry carries the same control id."""
    options = Hl7Options(control_id=key[:20], timestamp=created.strftime("%Y%m%d%H%M%S"))
    if isinstance(result, HprimNetFile):
        text = oru_r01_from_hprim_net(result.records[part.index], options)
    elif isinstance(result, HprimSanteFile):
        text = oru_r01_from_hprim_sante(result, result.patients[part.index], options)
    else:
        raise ValueError(f"no HL7 rendering of {part.kind} for mllp in this build (MDM is not wired)")
    return text.encode("utf-8")


def _fault(point: str) -> Any:
    if os.environ.get(FAULT_ENV) != point:
        return None
    return lambda: os.kill(os.getpid(), signal.SIGKILL)


def _sender(view: Any) -> str:
    from email.utils import parseaddr

    return parseaddr(view.summary.from_addr)[1].lower() if view.summary.from_addr else ""


def _candidates(raw: bytes, tree: Any = None) -> list[routing.CandidateFile]:
    """Attachments with a connector file name; else a text body that is HPRIM Net
    (`tree`: the message already parsed, `mimeview.parse_tree(raw)`)."""
    tree = mimeview.parse_tree(raw) if tree is None else tree
    out: list[routing.CandidateFile] = []
    body: bytes | None = None
    for info in mimeview.list_parts(tree):
        entity = mimeview.find_part(tree, mimeview.parse_part_id(info.part_id))
        if entity is None:
            continue
        if info.filename and routing.is_candidate_name(info.filename):
            out.append(routing.CandidateFile(len(out), info.part_id, info.filename, query.decoded_body(entity)))
        elif body is None and info.content_type == "text/plain" and not info.is_attachment:
            body = query.decoded_body(entity)
    if not out and body is not None and routing.body_is_hprim_net(body):
        out.append(routing.CandidateFile(0, "body", "", body))
    return out


def _render(result: Any, part: Any, data: bytes, options: dict[str, str]) -> tuple[bytes, str, bool]:
    """The bytes the target gets for one part, their default extension, and whether they
    are the whole file as received (then one delivery covers all its parts)."""
    wanted = options.get("format", "original")
    if isinstance(result, HprimNetFile):
        record = result.records[part.index]
        if wanted == "hprim_net":
            return render_record(record).data, "hpr", False
        return routing.record_bytes(data, record.start_line, record.end_line), "hpr", False
    if wanted == "hprim_net" and isinstance(result, HprimSanteFile):
        return render_hprim_sante_patient(result, result.patients[part.index]).data, "hpr", False
    if wanted == "hprim_net" and type(result).__name__ == "Dlu":
        return render_dlu(result).data, "hpr", False
    extension = {"HprimSanteFile": "hps", "Dlu": "xml", "XdmPackage": "zip"}.get(type(result).__name__, "dat")
    return data, extension, True


def connectors_component(ctx: Any) -> ConnectorWorker | None:
    if not ctx.config.connectors.enabled:
        return None
    return ConnectorWorker(ctx.config, ctx.store)
