"""`submit()`: sending a message from any front end (SMTP submission, webmail).

One place for what a submission must pass and what it does, in this order:
the envelope sender and every From: address owned by the actor (itself or a mailbox
delegated to it with `full` rights), every recipient in the space of trust, the
limits, the missing Date and Message-ID added (RFC 6409 8.2, 8.3), the submission
filters (crypto: sign and encrypt per policy, `options` only raising it), the relay
queue for remote recipients, then local delivery and the sender's Sent copy (the
`send` audit event) in one transaction: one durable batch, and no Sent copy when the
message reached nobody.

Front ends render the outcome: `SubmitResult`, or `SubmitRefused(code, enhanced,
text)` (an SMTP reply code, its RFC 3463 enhanced code, and the text). Nothing is
stored or queued for a refused submission.
"""

from __future__ import annotations

import email.utils
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mssmail import audit
from mssmail.delivery import filters
from mssmail.delivery.filters import NO_OPTIONS, SubmitOptions
from mssmail.delivery.pipeline import Copy, Delivery, Submission
from mssmail.delivery.service import DeliveryService
from mssmail.mime import fastpath
from mssmail.mime import headers as mime_headers
from mssmail.smtp import policy, replies
from mssmail.smtp.received import new_queue_id

if TYPE_CHECKING:
    from mssmail.config import Config
    from mssmail.store.delivery import DeliveryOutcome
    from mssmail.store.service import Store

# Rights on a mailbox that let its holder send as it (Mailbox delegations).
SENDING_RIGHTS = ("owner", "full")


@dataclass(frozen=True)
class SubmitRefused:
    """Nothing was stored or queued. `code` is the SMTP reply code (5xx permanent,
    4xx try later), `enhanced` its RFC 3463 status code."""

    code: int
    enhanced: str
    text: str

    @classmethod
    def of(cls, code: int, reason: str) -> SubmitRefused:
        """From a reply such as (550, "5.7.1 Relaying denied")."""
        enhanced, _, text = reason.partition(" ")
        if not ((enhanced[:1].isascii() and enhanced[:1].isdigit()) and enhanced.count(".") == 2):
            enhanced, text = "", reason
        return cls(code, enhanced, text)

    @property
    def reply(self) -> str:
        """The SMTP reply line."""
        return " ".join(part for part in (str(self.code), self.enhanced, self.text) if part)


@dataclass(frozen=True)
class SubmitResult:
    """Accepted: durable (copies committed, remote recipients queued)."""

    queue_id: str
    delivered: dict[str, DeliveryOutcome] = field(default_factory=dict)  # local recipients
    queued: tuple[str, ...] = ()  # remote recipients, in the relay queue
    sent: DeliveryOutcome | None = None  # the sender's Sent copy, when it was filed

    @property
    def reply(self) -> str:
        return f"250 2.0.0 OK queued as {self.queue_id}"


def allowed_senders(store: Store, actor: str) -> list[str]:
    """The addresses `actor` may send as (blocking: a store read)."""
    return [address for address, rights in store.accessible_mailboxes(actor) if rights in SENDING_RIGHTS]


class Headers:
    """The header fields a submission reads (From:, Date:, Message-ID:), found once
    for the From: check and the header completion, by the MIME room's reader: its
    regex fast path, or `headers.parse` for a block the fast path is unsure of."""

    WANTED = frozenset({b"from", b"date", b"message-id"})

    def __init__(self, raw: bytes) -> None:
        end, _body = mime_headers.block_offsets(raw)
        try:
            self._fields = fastpath.scan_fields(raw[:end], self.WANTED)
        except fastpath.Unsure:
            parsed = mime_headers.parse(raw)
            self._fields = {}
            for found in parsed.fields:
                name = found.name.lower()
                if name in self.WANTED:
                    self._fields.setdefault(name, []).append(found.value)

    def values(self, name: str) -> list[str]:
        return [mime_headers.text(v) for v in self._fields.get(name.lower().encode(), [])]


def complete_headers(raw: bytes, hostname: str, headers: Headers | None = None, sender: str = "",
                     block: policy.HeaderBlock | None = None) -> bytes:
    """RFC 6409 8.2/8.3: a submission server may add a missing Date and Message-ID; a
    missing From (RFC 5322 3.6 requires one) becomes the envelope sender, checked to be
    the actor's (as Postfix's always_add_missing_headers). The whole header block is
    read (policy.read_header_block, or `block`, that read of `raw` done by the caller): a
    field after 256 KB of headers is still there."""
    if block is None:
        block = policy.read_header_block(raw)
    added = b""
    if sender and not block.values("from") and not policy.is_null_sender(sender):
        added += f"From: <{sender}>\r\n".encode()
    if not block.values("date"):
        added += f"Date: {email.utils.formatdate(localtime=False)}\r\n".encode()
    if not block.values("message-id"):
        added += f"Message-ID: {email.utils.make_msgid(domain=hostname)}\r\n".encode()
    return added + raw


def relay_available() -> bool:
    """Whether this build has the outbound queue."""
    import importlib.util

    try:
        return importlib.util.find_spec("mssmail.queue.outbound") is not None
    except ModuleNotFoundError:
        return False


async def submit(store: Store, config: Config, actor: str, sender: str, recipients: Sequence[str], raw: bytes,
                 *, options: SubmitOptions = NO_OPTIONS, ip: str = "", service: str = "submission",
                 queue_id: str = "", trace: bytes = b"", allowed: Collection[str] | None = None,
                 ) -> SubmitResult | SubmitRefused:
    """Send `raw` from `sender` (as `actor`, an authenticated login) to `recipients`.

    `trace`: the front end's Received header, prepended after the filters (it is not
    part of what is signed). `allowed`: the addresses the actor may send as, when the
    caller already asked for them in this session (SMTP asks at MAIL FROM); otherwise
    asked here. `service` names the front end; the Sent copy keeps it with its
    recipients (Message.extra).
    Returns once every copy is durable and the remote recipients are queued.
    """
    sender = sender.strip().lower()
    targets = list(dict.fromkeys(r.strip().lower() for r in recipients if r.strip()))
    if allowed is None:
        allowed = await store.run(allowed_senders, store, actor)
    refused = policy.submission_sender_allowed(sender, allowed)
    if refused:
        return SubmitRefused.of(*refused)
    # From, Sender and Reply-To in the whole header block, as readers see them (issue 12
    # hole 4: mssmail.smtp.policy, which refuses blocks readers could read otherwise).
    block = policy.read_header_block(raw)  # read once: this check and complete_headers
    refused = policy.submission_headers_refused(raw, allowed, block)
    if refused:
        return SubmitRefused.of(*refused)
    if not targets:
        return SubmitRefused.of(*replies.NO_VALID_RECIPIENTS)
    if len(targets) > config.limits.max_recipients:
        return SubmitRefused.of(*replies.TOO_MANY_RECIPIENTS)
    if len(raw) > config.limits.max_message_size:
        return SubmitRefused.of(*replies.MESSAGE_TOO_BIG)
    deliveries = DeliveryService.of(store)
    local_domains = await deliveries.local_domains() | {config.server.domain.lower()}
    trust_domains = config.trust_domains()
    local: list[str] = []
    remote: list[str] = []
    for address in targets:
        route = policy.classify_recipient(address, local_domains, trust_domains)
        if route is policy.Route.REFUSED:
            return SubmitRefused.of(*replies.RECIPIENT_NOT_TRUSTED)
        (local if route is policy.Route.LOCAL else remote).append(address)
    if remote and not relay_available():
        return SubmitRefused.of(*replies.RELAY_UNAVAILABLE)
    queue_id = queue_id or new_queue_id()
    raw = complete_headers(raw, config.hostname, sender=sender, block=block)
    submission: Submission | None = Submission(sender, targets, options, trace)
    if remote:
        # The relay queue commits on its own, before the local copies: filters first, on
        # the store's threads, so that what is queued is what is stored.
        try:
            raw = await store.run(_filter_and_queue, store, sender, targets, remote, raw, options, trace,
                                  actor, ip)
        except filters.Reject as reject:
            return SubmitRefused.of(reject.code, reject.text)
        submission = None
    sent = Copy([sender], {"sender": sender, "folder": "Sent", "flags": ["\\Seen"], "action": audit.SEND,
                           "actor": actor, "ip": ip, "extra": {"recipients": targets, "service": service}}, inbound_filters=False)
    first = Copy(local, {"sender": sender, "actor": actor, "ip": ip, "action": audit.DELIVERY},
                 inbound_filters=bool(local))
    try:
        result = await deliveries.deliver(Delivery(raw, first, [sent], then_always=bool(remote),
                                                   submission=submission))
    except filters.Reject as reject:
        return SubmitRefused.of(reject.code, reject.text)
    delivered = result.outcomes
    if local and not remote and not any(o.ok for o in delivered.values()):
        failed = next(iter(delivered.values()))
        return SubmitRefused.of(*replies.refusal(failed.refusal))
    filed = result.then[0].get(sender) if result.then else None
    return SubmitResult(queue_id, delivered, tuple(remote), filed)


def _filter_and_queue(store: Store, sender: str, recipients: list[str], remote: list[str], raw: bytes,
                      options: SubmitOptions, trace: bytes, actor: str, ip: str) -> bytes:
    from mssmail.queue import outbound

    data = trace + filters.apply_submission(sender, recipients, raw, options)
    outbound.enqueue(store, sender, remote, data, actor=actor, ip=ip)
    return data
