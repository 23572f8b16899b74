"""When and how the connector worker acknowledges a message to its sender (issue 13
part 8): once every target of the message is final, one `connector.mdn` job, which
builds the MDN or the failure mail (`connectors.mdn`) and sends it through the one
submission path (`mssmail.delivery.submission.submit`, so signing, the space of trust,
the relay queue and the Sent copy all apply) as `system:connectors` for the mailbox.

"Final": every delivery job the route job made is `done` or `dead`. The check runs
after the route job completes and after each delivery job ends; whichever worker ends
the last one sees them all (each check reads after its own commit), and the MDN job's
key (mailbox, Message-ID) makes a second insertion a no-op: at most one MDN per
message, even when the sender sends it twice or two workers check at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connectors import folder, mdn
from mssmail import logs
from mssmail.store import mimeview, query
from mssmail.store.connectors import DELIVER_KIND, MDN_KIND
from mssmail.store.jobs import DEAD, DONE, JobItem, NewJob, job_key

if TYPE_CHECKING:
    from connectors.worker import ConnectorWorker

log = logging.getLogger("mss.connectors")
SUBMIT_TIMEOUT = 300.0


class Acknowledger:
    def __init__(self, worker: ConnectorWorker) -> None:
        self.worker = worker
        self.store = worker.store

    # --- deciding ------------------------------------------------------------------------
    def check(self, route_job_id: int | None) -> bool:
        """Enqueue the acknowledgement of the route job's message when all its deliveries
        are final; whether one was inserted now."""
        if route_job_id is None:
            return False
        route = self.store.get_job(int(route_job_id))
        ack = route.progress.get("ack")
        if route.state != DONE or not isinstance(ack, dict):
            return False
        deliveries = [j for j in self.store.list_jobs(kind=DELIVER_KIND, message_id=route.message_id, limit=10000)
                      if j.payload.get("route_job") == route.id]
        if any(j.state not in (DONE, DEAD) for j in deliveries):
            return False
        return self.conclude(route, deliveries)

    def conclude(self, route: JobItem, deliveries: list[JobItem]) -> bool:
        """`check` once the route job (done, its progress as committed) and all its
        delivery jobs (final) are known: the worker calls this directly when it made and
        completed every delivery of the message itself, in the transaction that completes
        them, rather than reading back what it has in hand."""
        ack = route.progress.get("ack")
        if not isinstance(ack, dict):
            return False
        failures: list[dict[str, Any]] = list(route.progress.get("failures") or [])
        failures += [{"code": j.progress.get("error_code") or mdn.OTHER, "detail": f"job {j.id}: {j.last_error}"}
                     for j in deliveries if j.state == DEAD]
        if not deliveries and not failures:
            return False  # nothing was routed: the message stays in the mailbox, untouched
        outcome = mdn.Outcome()
        if failures:
            specific = [f for f in failures if int(f.get("code") or mdn.OTHER) != mdn.OTHER]
            first = (specific or failures)[0]
            outcome = mdn.Outcome(int(first.get("code") or mdn.OTHER), str(first.get("detail", ""))[:500])
        original = mdn.Original(**{k: ack[k] for k in mdn.Original.__dataclass_fields__})
        decision = mdn.decide(original, outcome)
        if decision is None:
            self.store.connector_audit(self.worker.actor, "connector.mdn_sent", mailbox=route.mailbox,
                                       message=f"job/{route.id}",
                                       details={"key": route.key, "outcome": "not asked",
                                                "code": outcome.code, "message_id": original.message_id})
            return False
        kind, recipient = decision
        hostname = getattr(self.worker.config, "hostname", "localhost")
        key = job_key(MDN_KIND, route.mailbox, ack.get("identity") or original.message_id)
        new = NewJob(kind=MDN_KIND, key=key, mailbox=route.mailbox, message_id=route.message_id,
                     payload={"route_job": route.id, "type": kind, "to": recipient, "code": outcome.code,
                              "detail": outcome.detail, "original": ack,
                              "mdn_message_id": f"<mdn.{uuid.uuid4().hex}@{hostname}>",
                              "date": datetime.now(UTC).isoformat(), "deliveries": len(deliveries)})
        inserted = self.store.enqueue_jobs([new])
        if inserted:
            self.worker.wake()
        return bool(inserted)

    # --- sending -------------------------------------------------------------------------
    def run(self, job: JobItem) -> None:
        from mssmail.delivery.submission import SubmitRefused, submit

        payload = job.payload
        original = mdn.Original(**{k: payload["original"][k] for k in mdn.Original.__dataclass_fields__})
        outcome = mdn.Outcome(payload.get("code"), payload.get("detail", ""))
        located = self.store.locate_message(job.message_id) if job.message_id is not None else None
        raw, attachments = b"", []
        if located is not None:
            ref = self.store.open_folder(self.worker.actor, located.mailbox, located.folder)
            raw = self.store.message_view(ref, located.uid, mark_seen=False).raw
            attachments = _reattached(raw)
        config = self.worker.config
        limit = config.limits.max_message_size
        include = bool(raw) and 2 * len(raw) + 65536 < limit
        if sum(len(a[2]) for a in attachments) * 4 // 3 + 2 * len(raw) + 65536 > limit:
            attachments = []  # too big to send back: the original's header says which mail it was
        message = mdn.build(payload["type"], original, outcome, mailbox=job.mailbox, recipient=payload["to"],
                            raw=raw, attachments=attachments,
                            reporting_ua=f"{config.hostname}; mss connectors",
                            message_id=payload["mdn_message_id"],
                            now=datetime.fromisoformat(payload["date"]), include_original=include)
        result = self.worker.run_async(submit(self.store, config, self.worker.actor.audit_name, job.mailbox,
                                              [payload["to"]], message, allowed=[job.mailbox],
                                              service="connectors"), SUBMIT_TIMEOUT)
        if isinstance(result, SubmitRefused):
            text = f"submission refused the acknowledgement: {result.reply}"
            if result.code >= 500:
                raise folder.PermanentError(text)
            raise folder.TemporaryError(text)
        disposition = "processed" if outcome.ok else f"processed/Error: {outcome.error}"
        self.store.complete_job(job.id, self.worker.worker, progress={"outcome": "sent", "queue_id": result.queue_id})
        self.store.connector_audit(self.worker.actor, "connector.mdn_sent", mailbox=job.mailbox,
                                   message=f"job/{job.id}",
                                   details={"key": job.key, "type": payload["type"], "to": payload["to"],
                                            "code": outcome.code, "disposition": disposition,
                                            "message_id": original.message_id,
                                            "mdn_message_id": payload["mdn_message_id"], "size": len(message),
                                            "sha256": hashlib.sha256(message).hexdigest(),
                                            "queue_id": result.queue_id})
        logs.event("connector.mdn_sent", job=job.id, key=job.key[:16], type=payload["type"],
                   code=outcome.code or "", queue_id=result.queue_id)


def original_fields(raw: bytes, return_path: str, identity: str,
                    tree: Any = None) -> tuple[dict[str, Any], mdn.Original]:
    """What the acknowledgement will need, read at routing time (kept in the route job:
    the message may be moved or expunged before the last delivery ends). `tree`: the
    message already parsed (`mimeview.parse_tree(raw)`)."""
    original = mdn.read_original(mimeview.parse_tree(raw) if tree is None else tree, return_path)
    fields = {name: getattr(original, name) for name in mdn.Original.__dataclass_fields__}
    fields["identity"] = identity
    return fields, original


def _reattached(raw: bytes) -> list[tuple[str, str, bytes]]:
    tree = mimeview.parse_tree(raw)
    out: list[tuple[str, str, bytes]] = []
    for info in mimeview.list_parts(tree):
        if not info.filename or not mdn.reattached(info.filename, info.content_type):
            continue
        entity = mimeview.find_part(tree, mimeview.parse_part_id(info.part_id))
        if entity is not None:
            out.append((info.filename, info.content_type, query.decoded_body(entity)))
    return out


def run_coroutine(loop: asyncio.AbstractEventLoop | None, coro: Any, timeout: float) -> Any:
    """Run `coro` on the serving event loop from the worker thread (the store's
    submission machinery lives there), or on a fresh loop when there is none (tests
    that drive the worker by hand)."""
    if loop is not None and loop.is_running():
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
    return asyncio.run(coro)
