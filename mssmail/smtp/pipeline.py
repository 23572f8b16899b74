"""SMTP deliveries prepared by one thread, a batch at a time, and committed in groups.

Why: handing each message to the store's thread pool costs, per message, a thread
wake-up, a future, a hand-off to the committer thread and one back, each a fight for
the interpreter lock with the event loop and the other store threads. Here the loop
appends the message to a list; one thread takes every message waiting, runs the
inbound filters, summarises and writes each blob (`BlobStore.put_many`: flushed by the
group committer before it commits the rows where it can flush, else fsynced here),
hands the whole batch to the group committer at once and, without waiting for that
commit, goes on with the next batch. One callback per batch wakes the loop once the
commit is durable: durable before acknowledged.

Large messages do not come here (`LocalGateway.deliver`): one 10 MB blob would hold
up the small messages of its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from concurrent.futures import Future
from typing import Any

from mssmail.smtp import hooks
from mssmail.store.summary import summarize

log = logging.getLogger("mss.smtp")
MAX_BATCH = 64

# (data, recipients, Store.delivery_request keywords, run the inbound filters?, the caller's future)
_Item = tuple[bytes, list[str], dict[str, Any], bool, "asyncio.Future[Any]"]


def prepare(store: Any, data: bytes, recipients: list[str], inbound_filters: bool,
            request: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The bytes to store and the `Store.delivery_request` keywords, after the inbound
    filters (crypto). A `stored` (SHA-256, summary) from an SMTP worker, which wrote
    and fsynced the blob of `data`, is used only if the filters left `data` as it was
    and the blob is there with that digest; otherwise the blob is written here."""
    stored = request.pop("stored", None)
    content = data
    if inbound_filters:
        content, extra = hooks.apply_inbound(request.get("sender", ""), recipients, data)
        request["extra"] = extra or None
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


class DeliveryPipeline:
    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self._pending: list[_Item] = []
        self._cond = threading.Condition()
        store.blobs.spares.start()  # temporary files for the batches' blobs, made ahead
        self._thread = threading.Thread(target=self._run, name="smtp-deliveries", daemon=True)
        self._thread.start()

    async def deliver(self, data: bytes, recipients: list[str], *, inbound_filters: bool,
                      **request: Any) -> tuple[dict[str, Any], list[Any]]:
        """(outcomes by recipient, change events) once the delivery is committed;
        `request` as for `Store.delivery_request` (sender, ip, action, folder...)."""
        future: asyncio.Future[Any] = self.loop.create_future()
        with self._cond:
            self._pending.append((data, recipients, dict(request), inbound_filters, future))
            self._cond.notify()
        return await future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                self._prepare_and_queue(batch)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("delivery batch failed")
                self._post([(item[4], None, exc) for item in batch])

    def _prepare_and_queue(self, batch: list[_Item]) -> None:
        prepared, failed = [], []
        for data, recipients, request, inbound_filters, future in batch:
            try:
                content, fields = prepare(self.store, data, recipients, inbound_filters, request)
                if "stored" not in fields:
                    fields["stored"] = (None, summarize(content))
                prepared.append((content, recipients, fields, future))
            except Exception as exc:
                failed.append((future, None, exc))
        unwritten = [item for item in prepared if item[2]["stored"][0] is None]
        try:
            # Written complete and named; the committer flushes them, with one syncfs for
            # the batch, before it commits the rows (Store.committer_flushes).
            digests = self.store.blobs.put_many([content for content, *_ in unwritten],
                                                flush=not self.store.committer_flushes)
        except Exception as exc:
            failed.extend((future, None, exc) for *_, future in unwritten)
            prepared = [item for item in prepared if item[2]["stored"][0] is not None]
        else:
            for (_content, _recipients, fields, _future), sha in zip(unwritten, digests, strict=True):
                fields["stored"] = (sha, fields["stored"][1])
        requests, waiting = [], []
        for content, recipients, fields, future in prepared:
            try:
                requests.append(self.store.delivery_request(content, recipients, **fields))
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
