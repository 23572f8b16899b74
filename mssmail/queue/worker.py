"""The relay worker: takes due items from the outbound queue and delivers them.

Polls every `[relay] poll_interval` (and at once when `enqueue` wakes it), runs up to
`[relay] workers` deliveries at a time, each SMTP conversation in a thread. Outcomes per
recipient: 2xx sent, 5xx permanent (DSN to the sender), 4xx or network/TLS problems
temporary (retry with backoff until `[relay] max_age`, then DSN). A delay warning goes
to the sender once after `[relay] delay_warning_after`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from crypto.context import trust_for
from mssmail import audit, logs
from mssmail.delivery.service import DeliveryService
from mssmail.queue import backoff, client, dsn, notify, routes
from mssmail.store.outbound import RecipientResult

log = logging.getLogger("mss.relay")

# A claimed item becomes due again if not finished within its lease (the process died).
# Each SMTP step is bounded by connect_timeout; a session has a handful of steps.
LEASE_MARGIN = 300
LEASE_STEPS = 20


class RelayWorker:
    name = "relay"

    def __init__(self, config: Any, store: Any) -> None:
        self.config = config
        self.relay = config.relay
        self.store = store
        self.hostname = config.hostname
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._busy: set[int] = set()
        self._slots = asyncio.Semaphore(self.relay.workers)
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=self.relay.workers, thread_name_prefix="relay")
        self._context: Any = None

    # --- component interface -------------------------------------------------------
    async def start(self) -> list[str]:
        from mssmail.tls import client_context

        self._context = client_context(self.config)
        notify.register(asyncio.get_running_loop(), self._wake)
        self._task = asyncio.create_task(self._run(), name="relay-poller")
        table = self.relay.route_table()
        where = ", ".join(f"{d}->{h}:{p}" for d, (h, p) in sorted(table.items())) or "none"
        mx = " + MX lookup" if self.relay.use_mx else ""
        return [f"relay: outbound queue worker ({self.relay.workers} at once; routes: {where}{mx})"]

    async def stop(self, grace: float) -> None:
        self._stopping = True
        notify.unregister(self._wake)
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            # Unfinished items keep their lease and are retried after it runs out.
            await asyncio.wait(self._inflight, timeout=grace)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    # --- polling ---------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay: polling the queue failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.relay.poll_interval)
            self._wake.clear()

    async def _poll_once(self) -> None:
        free = self.relay.workers - len(self._inflight)
        if free <= 0:
            return
        lease = self.relay.connect_timeout * LEASE_STEPS + LEASE_MARGIN
        items = await self.store.run(self.store.claim_outbound, free, lease)
        for item in items:
            if item["id"] in self._busy:
                continue  # still ours (its lease ran out while it was slow): not twice
            self._busy.add(item["id"])
            task = asyncio.create_task(self._process(item), name=f"relay-{item['id']}")
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay: delivery task failed", exc_info=task.exception())
        # A slot is free: more due items may be waiting.
        if not self._stopping:
            self._wake.set()

    # --- one item --------------------------------------------------------------------
    async def _process(self, item: dict[str, Any]) -> None:
        try:
            await self._deliver_item(item)
        except Exception as exc:
            # A bug or a lost blob must not leave the item leased forever: count the attempt
            # as temporary so backoff and max_age (then a DSN) still apply.
            log.exception("relay: queue/%s: attempt failed unexpectedly", item["id"])
            pending = [e["address"] for e in item["recipients"] if e["status"] == "queued"]
            failure = RecipientResult("deferred", 0, f"4.3.0 local error: {type(exc).__name__}: {exc}")
            raw = b""
            with contextlib.suppress(Exception):
                raw = self.store.blobs.read(item["blob_sha256"])
            await self._record(item, raw, dict.fromkeys(pending, failure))
        finally:
            self._busy.discard(item["id"])

    async def _deliver_item(self, item: dict[str, Any]) -> None:
        async with self._slots:
            loop = asyncio.get_running_loop()
            raw = await self.store.run(self.store.blobs.read, item["blob_sha256"])
            pending = [e["address"] for e in item["recipients"] if e["status"] == "queued"]
            by_peer: dict[tuple[client.Peer, ...], list[str]] = defaultdict(list)
            results: dict[str, RecipientResult] = {}
            for rcpt in pending:
                domain = routes.domain_of(rcpt)
                try:
                    hosts = await loop.run_in_executor(self._executor, routes.resolve, domain, self.relay)
                except routes.NoRoute as exc:
                    results[rcpt] = RecipientResult("failed", 0, f"{dsn.STATUS_NO_ROUTE} {exc}")
                    continue
                except routes.RouteLookupFailed as exc:
                    results[rcpt] = RecipientResult("deferred", 0, f"4.4.3 {exc}")
                    continue
                by_peer[tuple(client.Peer(h, p) for h, p in hosts)].append(rcpt)
            for peers, rcpts in by_peer.items():
                for peer in peers:
                    # Anchors and CRLs read each attempt: `mss cert trust --crl` needs no restart.
                    outcome = await loop.run_in_executor(
                        self._executor, lambda peer=peer, rcpts=rcpts: client.deliver(
                            peer, self._context, self.hostname, item["sender"], rcpts, raw,
                            float(self.relay.connect_timeout), trust_for(self.config)))
                    # RFC 5321 5.1: on a connection-level failure try the next MX host.
                    if not all(r.status == "deferred" and not r.code for r in outcome.values()):
                        break
                results.update(outcome)
            await self._record(item, raw, results)

    async def _record(self, item: dict[str, Any], raw: bytes, results: dict[str, RecipientResult]) -> None:
        now = datetime.now(UTC)
        created = item["created_at"]
        attempts = item["attempts"] + 1
        deferred = {r: res for r, res in results.items() if res.status == "deferred"}
        is_expired = bool(deferred) and backoff.expired(now, created, self.relay.max_age)
        if is_expired:
            # RFC 3463 X.4.7: delivery time expired; a final failure.
            for rcpt, res in deferred.items():
                last = f"{res.code} {res.text}".strip() if res.code else res.text
                results[rcpt] = RecipientResult("failed", res.code,
                                                f"{dsn.STATUS_EXPIRED} gave up after {attempts} attempts: {last}",
                                                res.remote)
            deferred = {}
        warn = (bool(deferred) and not item["delay_warned"]
                and (now - created).total_seconds() >= self.relay.delay_warning_after)
        errors = [f"{r}: {res.code} {res.text}".replace(": 0 ", ": ") for r, res in results.items()
                  if res.status != "sent"]
        next_at = backoff.next_attempt(now, created, attempts, initial=self.relay.retry_initial,
                                       max_interval=self.relay.retry_max_interval,
                                       max_age=self.relay.max_age)
        updated = await self.store.run(self.store.record_attempt, item["id"], results,
                                       next_attempt=next_at, last_error="; ".join(errors),
                                       delay_warned=True if warn else None)
        failed = [self._status(r, res, dsn.FAILED) for r, res in results.items() if res.status == "failed"]
        for rcpt, res in results.items():
            level = logging.INFO if res.status == "sent" else logging.WARNING
            logs.event(logs.RELAY_ATTEMPT, level=level, queue_id=str(item["id"]), peer=res.remote or None,
                       sender=item["sender"], recipient=rcpt, attempt=attempts,
                       outcome={"sent": "delivered", "failed": "bounced"}.get(res.status, res.status),
                       code=res.code or None, reason=res.text)
        if failed:
            await self._notify_sender(item, raw, failed, now)
        if warn:
            delayed = [self._status(r, res, dsn.DELAYED) for r, res in deferred.items()]
            await self._notify_sender(item, raw, delayed, now)
        if updated["state"] == "queued":
            log.info("relay: queue/%s next attempt at %s", item["id"], updated["next_attempt"].isoformat())

    @staticmethod
    def _status(rcpt: str, res: RecipientResult, action: str) -> dsn.RecipientStatus:
        diagnostic = f"{res.code} {res.text}".strip() if res.code else res.text
        status = dsn.status_from_reply(res.code, res.text, permanent=action == dsn.FAILED)
        if action == dsn.DELAYED:
            status = dsn.status_from_reply(res.code, res.text, permanent=False)
            if status.startswith("5"):
                status = dsn.STATUS_DELAYED
        elif not status.startswith("5"):
            status = dsn.STATUS_GENERIC_PERMANENT
        return dsn.RecipientStatus(rcpt, action, status, diagnostic, res.remote.rsplit(":", 1)[0])

    async def _notify_sender(self, item: dict[str, Any], raw: bytes,
                             recipients: list[dsn.RecipientStatus], now: datetime) -> None:
        sender = item["sender"]
        if not sender:
            # RFC 3464 / RFC 5321 6.1: never a notification about a null-sender message.
            return
        report = dsn.build_dsn(
            reporting_mta=self.hostname, sender=sender, recipients=recipients, original=raw,
            arrival_date=item["created_at"], now=now, envelope_id=item["envelope_id"],
            expiry=backoff.expiry(item["created_at"], self.relay.max_age), queue_id=str(item["id"]),
        )
        # Through the delivery service, as every delivery: batched with the others.
        outcomes = await DeliveryService.of(self.store).deliver_message(
            report, [sender], inbound_filters=False, sender="", action=audit.BOUNCE, actor="relay")
        for address, outcome in outcomes.items():
            if not outcome.ok:
                log.error("relay: could not deliver the DSN for queue/%s to %s: %s",
                          item["id"], address, outcome.refusal)


def relay_component(ctx: Any) -> RelayWorker | None:
    return RelayWorker(ctx.config, ctx.store)
