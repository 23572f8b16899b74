"""The network targets `fhir`, `smtp` and `imap` in the worker: what one routed part
becomes (a delivery job whose bytes are rendered now and kept in the blob store, so
every attempt sends the same bytes) and how that job is delivered.

- `fhir`: one job per part (an HPRIM record or patient, a CDA document): its transaction
  Bundle (`connectors.fhir.render`).
- `smtp` and `imap`: one job per message and target, whatever its parts: the received
  mail itself under resent fields and `X-MSS-Original-Message-ID`
  (`connectors.smtp.render`); the worker drops the repeats by job key.

The rule's options (file paths, switches: never a secret) are copied into the job, so a
job still runs after its rule is removed, as the folder and mllp jobs do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from connectors import fhir, imap, smtp
from mssmail import logs
from mssmail.store.connectors import DELIVER_KIND
from mssmail.store.jobs import JobItem, NewJob, job_key

if TYPE_CHECKING:
    from connectors.worker import ConnectorWorker

TYPES = ("fhir", "smtp", "imap")
log = logging.getLogger("mss.connectors")


def route(worker: ConnectorWorker, job: JobItem, located: Any, identity: str, raw: bytes, result: Any, part: Any,
          candidate: Any, rule: Any, target: str, where: str) -> list[NewJob]:
    """The delivery job of one part for one network target (none when the part has no
    rendering for it: audited as routed with that outcome)."""
    mailbox = located.mailbox
    hostname = getattr(worker.config, "hostname", "localhost")
    if rule.target_type == "fhir":
        part_id = f"{candidate.index}.{part.index}"
        key = job_key(mailbox, identity, part_id, f"fhir:{target}")
        try:
            data = fhir.render(result, part, candidate.data)
        except ValueError as exc:
            worker.store.connector_audit(worker.actor, "connector.routed", mailbox=mailbox, message=where,
                                         details={"key": key, "rule": rule.id, "outcome": str(exc),
                                                  "kind": part.kind, "message_id": located.message_id})
            return []
    else:
        part_id = "message"
        key = job_key(mailbox, identity, part_id, f"{rule.target_type}:{target}")
        recipient = smtp.parse_target(target).recipient if rule.target_type == "smtp" else mailbox
        data = smtp.render(raw, original_id=identity, mailbox=mailbox, recipient=recipient,
                           resent_id=f"<{key[:32]}@{hostname}>", when=job.created_at)
    sha = worker.store.blobs.put(data)
    return [NewJob(kind=DELIVER_KIND, key=key, mailbox=mailbox, message_id=job.message_id,
                   payload={"type": rule.target_type, "target": target, "name": "", "input_sha256": sha,
                            "size": len(data), "rule": rule.id, "part": part_id, "kind": part.kind,
                            "route_job": job.id, "options": dict(rule.options),
                            "message_id": located.message_id})]


def send(worker: ConnectorWorker, target_type: str, target: str, data: bytes, options: dict[str, str],
         sender: str) -> str:
    """Deliver to the peer; its answer as one line. folder.PermanentError /
    TemporaryError as the other targets raise them."""
    timeout = float(worker.settings.network_timeout)
    if target_type == "fhir":
        return fhir.deliver(target, data, options, timeout).summary()
    if target_type == "smtp":
        return smtp.send(target, sender, data, options, timeout, getattr(worker.config, "hostname", "localhost"))
    return imap.append(target, data, options, timeout)


def deliver(worker: ConnectorWorker, job: JobItem) -> None:
    from connectors.folder import PermanentError

    payload = job.payload
    sha = payload["input_sha256"]
    if not worker.store.blobs.exists(sha):
        raise PermanentError(f"the job's input {sha[:12]} is missing from the blob store")
    data = worker.store.blobs.read(sha)
    answer = send(worker, payload["type"], payload["target"], data, dict(payload.get("options") or {}),
                  job.mailbox)
    worker.store.complete_job(job.id, worker.worker, progress={"outcome": answer[:500]})
    worker.store.connector_audit(worker.actor, "connector.delivered", mailbox=job.mailbox, message=f"job/{job.id}",
                                 details={"key": job.key, "type": payload["type"], "target": payload["target"],
                                          "outcome": answer[:300], "size": len(data), "sha256": sha,
                                          "attempts": job.attempts, "message_id": payload.get("message_id", "")})
    logs.event("connector.delivered", job=job.id, key=job.key[:16], target=payload["target"], outcome=answer[:120])
    worker.acks.check(payload.get("route_job"))
