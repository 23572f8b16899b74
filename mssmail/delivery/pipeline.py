"""Deliveries prepared by one thread, a batch at a time, and committed in groups.

Why: handing each message to the store's thread pool costs, per message, a thread
wake-up, a future, a hand-off to the committer thread and one back, each a fight for
the interpreter lock with the event loop and the other store threads. Here the loop
appends the message to a list; one thread takes every message waiting, runs the
filters (a submission's, then the inbound ones of each local copy), summarises and
writes each blob (`BlobStore.put_many`: flushed by the group committer before it
commits the rows where it can flush, else fsynced here), hands the whole batch to the
group committer at once and, without waiting for that commit, goes on with the next
batch. One callback per batch wakes the loop once the commit is durable: durable
before acknowledged.

A message may have several copies (a submission: the recipients' and the sender's
Sent copy): they go into one `DeliveryRequest` (`then`), so one commit makes all of
them durable, and a copy that depends on the first (Sent) is not written if the
message reached nobody.

Large messages do not come here (`DeliveryService`): one 10 MB blob would hold up the
small messages of its batch; `prepare_delivery` does the same work on the store's
thread pool for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mssmail.delivery import filters
from mssmail.store.summary import Summary, summarize

if TYPE_CHECKING:
    from mssmail.store.delivery import DeliveryRequest, DeliveryResult
    from mssmail.store.service import Store

log = logging.getLogger("mss.delivery")
MAX_BATCH = 64


@dataclass
class Copy:
    """One stored copy of a message: its local recipients, the `Store.delivery_request`
    keywords (sender, ip, action, folder, flags, extra, stored...), and whether the
    inbound filters (crypto verification) run on it."""

    recipients: list[str]
    fields: dict[str, Any]
    inbound_filters: bool = True


@dataclass(frozen=True)
class Submission:
    """A submission's filters, run on the delivery thread before any copy is made:
    (sender, all its recipients, options); `trace` (the Received header) is prepended
    to what they return."""

    sender: str
    recipients: list[str]
    options: filters.SubmitOptions = filters.NO_OPTIONS
    trace: bytes = b""


@dataclass
class Delivery:
    """A message and its copies: `first`, then `then` in the same transaction (once
    `first` reached someone, or always with `then_always`)."""

    data: bytes
    first: Copy
    then: list[Copy] = field(default_factory=list)
    then_always: bool = False
    submission: Submission | None = None


def prepare(store: Store, data: bytes, recipients: list[str], inbound_filters: bool,
            request: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The bytes to store and the `Store.delivery_request` keywords, after the inbound
    filters (crypto). A `stored` (SHA-256, summary) from an SMTP worker, which wrote
    and fsynced the blob of `data`, is used only if the filters left `data` as it was
    and the blob is there with that digest; otherwise the blob is written here."""
    stored = request.pop("stored", None)
    content = data
    if inbound_filters:
        content, extra = filters.apply_inbound(request.get("sender", ""), recipients, data)
        request["extra"] = {**(request.get("extra") or {}), **extra} or None
    if stored is None:
        return content, request
    if content is data or content == data:
        if hashlib.sha256(data).hexdigest() == stored[0] and store.blobs.exists(stored[0]):
            request["stored"] = stored
    else:
        # Unused: its bytes begin with this transaction's Received header, whose queue id
        # is 64 random bits, so no other message can refer to this blob.
        with contextlib.suppress(OSError, ValueError):
            store.blobs.remove(stored[0])
    return content, request


def _copies(store: Store, delivery: Delivery) -> list[tuple[bytes, list[str], dict[str, Any]]]:
    """(bytes, recipients, delivery_request keywords) of each copy, filters applied;
    a `filters.Reject` from a submission filter leaves nothing written."""
    data = delivery.data
    submission = delivery.submission
    if submission is not None:
        data = submission.trace + filters.apply_submission(submission.sender, submission.recipients, data,
                                                           submission.options)
    out = []
    summaries: dict[int, tuple[bytes, Summary]] = {}  # copies with the same bytes: one summary
    for copy in (delivery.first, *delivery.then):
        content, fields = prepare(store, data, copy.recipients, copy.inbound_filters, dict(copy.fields))
        if "stored" not in fields:
            known = summaries.get(id(content))
            if known is None or known[0] is not content:
                known = summaries[id(content)] = (content, summarize(content))
            fields["stored"] = (None, known[1])
        out.append((content, copy.recipients, fields))
    return out


def _request(store: Store, delivery: Delivery, copies: list[tuple[bytes, list[str], dict[str, Any]]]
             ) -> DeliveryRequest:
    """The one `DeliveryRequest` of a delivery whose blobs are written."""
    then = [store.delivery_request(content, recipients, **fields) for content, recipients, fields in copies[1:]]
    content, recipients, fields = copies[0]
    return store.delivery_request(content, recipients, then=then, then_always=delivery.then_always, **fields)


def prepare_delivery(store: Store, delivery: Delivery) -> DeliveryRequest:
    """Filters, blobs and request of one delivery, alone (a large message): blobs
    written as in a batch, flushed by the committer where it can."""
    copies = _copies(store, delivery)
    _write_blobs(store, copies)
    return _request(store, delivery, copies)


def _write_blobs(store: Store, copies: Sequence[tuple[bytes, list[str], dict[str, Any]]]) -> None:
    """Write the blobs the copies still lack; their `stored` digests filled in place.
    Complete and named; the committer flushes them, with one syncfs for the batch,
    before it commits the rows (Store.committer_flushes)."""
    unwritten = [copy for copy in copies if copy[2]["stored"][0] is None]
    digests = store.blobs.put_many([content for content, *_ in unwritten], flush=not store.committer_flushes)
    for (_content, _recipients, fields), sha in zip(unwritten, digests, strict=True):
        fields["stored"] = (sha, fields["stored"][1])


_Item = tuple[Delivery, "asyncio.Future[DeliveryResult]"]


class DeliveryPipeline:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        # A C queue, not a Condition and a list: `put` from the event loop is one call that
        # wakes the thread only when it waits, where Condition.notify ran Python code and
        # took two locks for every message.
        self._pending: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        store.blobs.spares.start()  # temporary files for the batches' blobs, made ahead
        self._thread = threading.Thread(target=self._run, name="deliveries", daemon=True)
        self._thread.start()

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        """The delivery's result once it is committed (durable); raises what the filters
        or the store raised for it alone."""
        future: asyncio.Future[DeliveryResult] = self.loop.create_future()
        self._pending.put((delivery, future))
        return await future

    def _take(self) -> list[_Item]:
        """Every delivery waiting (at most MAX_BATCH), after waiting for the first."""
        batch = [self._pending.get()]
        with contextlib.suppress(queue.Empty):
            while len(batch) < MAX_BATCH:
                batch.append(self._pending.get_nowait())
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                self._prepare_and_queue(batch)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("delivery batch failed")
                self._post([(future, None, exc) for _delivery, future in batch])

    def _prepare_and_queue(self, batch: list[_Item]) -> None:
        prepared: list[tuple[Delivery, list[tuple[bytes, list[str], dict[str, Any]]], asyncio.Future[Any]]] = []
        failed: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for delivery, future in batch:
            try:
                prepared.append((delivery, _copies(self.store, delivery), future))
            except Exception as exc:
                failed.append((future, None, exc))
        try:
            _write_blobs(self.store, [copy for _delivery, copies, _future in prepared for copy in copies])
        except Exception as exc:
            # Which were written is unknown: fail those that needed one, keep the others.
            keep = []
            for item in prepared:
                if any(fields["stored"][0] is None for _c, _r, fields in item[1]):
                    failed.append((item[2], None, exc))
                else:
                    keep.append(item)
            prepared = keep
        requests, waiting = [], []
        for delivery, copies, future in prepared:
            try:
                requests.append(_request(self.store, delivery, copies))
                waiting.append(future)
            except Exception as exc:
                failed.append((future, None, exc))
        if failed:
            self._post(failed)
        if not requests:
            return
        commits = self.store.queue_deliveries(requests)
        remaining = [len(commits)]
        lock = threading.Lock()

        def one_done(_commit: Future[Any]) -> None:
            # Runs on the committer thread; the last of the batch wakes the loop once.
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            settled = []
            for future, commit in zip(waiting, commits, strict=True):
                error = commit.exception()
                settled.append((future, None if error else commit.result(), error))
            self._post(settled)

        for commit in commits:
            commit.add_done_callback(one_done)

    def _post(self, settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
