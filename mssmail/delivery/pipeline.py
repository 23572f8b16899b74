"""Deliveries prepared and committed in batches by the store's group committer.

Why: handing each message to the store's thread pool costs, per message, a thread
wake-up, a future, a hand-off to the committer thread and one back, each a fight for
the interpreter lock with the event loop and the other store threads. Here the loop
queues the message for the group committer (`Store.queue_unprepared`); its thread
takes every message waiting, runs the filters (a submission's, then the inbound ones
of each local copy), summarises and writes each blob (`BlobStore.put_many`: flushed by
the group committer before it commits the rows where it can flush, else fsynced
here), then writes the rows of the whole batch in its transaction. The loop is woken
once for every burst of results, after the commit is durable: durable before
acknowledged.

Until 2026-12-07 a delivery thread of its own did the preparing and handed each batch
to the committer: two more thread hand-offs a batch (loop -> delivery thread ->
committer), for work that is a small part of a cycle (py-spy of an in-process submit()
loop: that thread 6% of the samples, the committer 40%).

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
import functools
import hashlib
import logging
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


class DeliveryPipeline:
    """Deliveries of one store from one event loop, prepared and committed by the
    store's group committer (module docstring): the loop queues each delivery and is
    woken once for every batch of results."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        store.blobs.spares.start()  # temporary files for the batches' blobs, made ahead
        # Results settled on the committer's threads, waiting for the loop: the first
        # one of a burst schedules one wake-up of the loop for all of them.
        self._ready: list[tuple[asyncio.Future[Any], Future[Any]]] = []
        self._ready_lock = threading.Lock()

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        """The delivery's result once it is committed (durable); raises what the filters
        or the store raised for it alone."""
        future: asyncio.Future[DeliveryResult] = self.loop.create_future()
        commit = self.store.queue_unprepared(self._prepare, [delivery])[0]
        commit.add_done_callback(functools.partial(self._done, future))
        return await future

    def _done(self, future: asyncio.Future[Any], commit: Future[Any]) -> None:
        """On the thread that settled `commit` (committer or flush)."""
        with self._ready_lock:
            first = not self._ready
            self._ready.append((future, commit))
        if first:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        """On the loop: every result settled since the last wake-up."""
        with self._ready_lock:
            ready, self._ready = self._ready, []
        for future, commit in ready:
            if future.done():
                continue
            error = commit.exception()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(commit.result())

    def _prepare(self, batch: Sequence[Delivery]) -> list[Any]:
        """On the committer thread, before its flush: each delivery's filters, summaries
        and blob files (one `put_many` for the batch), then its `BatchWork`, or the
        exception that fails it alone."""
        from mssmail.store.delivery import deliver_batch
        from mssmail.store.groupcommit import BatchWork

        out: list[Any] = [None] * len(batch)
        prepared: list[tuple[int, Delivery, list[tuple[bytes, list[str], dict[str, Any]]]]] = []
        for index, delivery in enumerate(batch):
            try:
                prepared.append((index, delivery, _copies(self.store, delivery)))
            except Exception as exc:
                out[index] = exc
        try:
            _write_blobs(self.store, [copy for _index, _delivery, copies in prepared for copy in copies])
        except Exception as exc:
            # Which were written is unknown: fail those that needed one, keep the others.
            keep = []
            for item in prepared:
                if any(fields["stored"][0] is None for _c, _r, fields in item[2]):
                    out[item[0]] = exc
                else:
                    keep.append(item)
            prepared = keep
        for index, delivery, copies in prepared:
            try:
                out[index] = BatchWork(deliver_batch, _request(self.store, delivery, copies))
            except Exception as exc:
                out[index] = exc
        return out
