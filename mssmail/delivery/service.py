"""The delivery service: the one way a front end puts a message into local mailboxes.

SMTP MX and submission (in this process, or for an SMTP worker through its gateway),
the webmail's send, the relay's DSNs and the connectors' re-deliveries all call it,
so they share one pipeline thread, one group committer and one write path
(`mssmail.store.delivery.deliver_batch`). It is bound to the store and to the event
loop of the process (`DeliveryService.of`): a call from the loop awaits the commit
without occupying a thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from mssmail.delivery.pipeline import Copy, Delivery, DeliveryPipeline, prepare_delivery

if TYPE_CHECKING:
    from mssmail.store.delivery import DeliveryOutcome, DeliveryResult
    from mssmail.store.service import Store

# Larger messages are prepared on the store's thread pool rather than in the pipeline.
PIPELINE_MAX_SIZE = 256 * 1024
# How long the local domains are believed: they change when an administrator adds one.
DOMAIN_CACHE_SECONDS = 30.0


class DeliveryService:
    """Deliveries of one store on one event loop."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self._pipeline: DeliveryPipeline | None = None
        self._domains: frozenset[str] = frozenset()
        self._domains_at = float("-inf")

    @classmethod
    def of(cls, store: Store) -> DeliveryService:
        """The service of `store` on the running loop (made on first use)."""
        loop = asyncio.get_running_loop()
        service: DeliveryService | None = getattr(store, "_delivery_service", None)
        if service is None or service.loop is not loop:
            service = cls(store, loop)
            store._delivery_service = service  # type: ignore[attr-defined]
        return service

    async def local_domains(self) -> frozenset[str]:
        """The domains whose mailboxes are here (asked of the store every 30 s)."""
        now = time.monotonic()
        if now - self._domains_at > DOMAIN_CACHE_SECONDS:
            self._domains = frozenset(d.lower() for d in await self.store.run(self.store.local_domains))
            self._domains_at = now
        return self._domains

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        """Filters, blobs and rows of every copy, one commit; returns once durable and
        publishes the changed folders (IMAP IDLE, webmail)."""
        if len(delivery.data) > PIPELINE_MAX_SIZE:
            # On the thread pool: a large blob is written beside the others, not before them.
            request = await self.store.run(prepare_delivery, self.store, delivery)
            result = await asyncio.wrap_future(self.store.queue_deliveries([request])[0])
        else:
            if self._pipeline is None:
                self._pipeline = DeliveryPipeline(self.store, self.loop)
            result = await self._pipeline.deliver(delivery)
        for event in result.changed:
            self.store.changes.publish(event)
        return result

    async def deliver_message(self, data: bytes, recipients: list[str], *, inbound_filters: bool = True,
                              **fields: Any) -> dict[str, DeliveryOutcome]:
        """One copy to local recipients: outcome by recipient. `fields` as for
        `Store.delivery_request` (sender, ip, action, folder, flags, extra, stored)."""
        result = await self.deliver(Delivery(data, Copy(list(recipients), fields, inbound_filters)))
        return result.outcomes
