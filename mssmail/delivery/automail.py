"""Out-of-office replies and forwarding: what a mailbox's settings ask the delivery to
do with each message it receives (`mssmail.store.settings`, the webmail's "Options").

Never in the way of acceptance: the delivery only inserts a job in its own transaction
(`mssmail.store.settings.automail_jobs`, for INBOX deliveries to a mailbox whose
settings ask for something); the SMTP peer has its 250 before any of this runs. This
component (`mss serve` service `automail`) takes the jobs from the store's job table
and sends through `mssmail.delivery.submission.submit`, the one submission path: the
From check, the space of trust, the crypto policy (signed and encrypted as the mailbox's
own mail) and the Sent copy apply to these messages as to any other.

Out-of-office (RFC 3834):
- answered only while enabled and today (Paris) is between its dates;
- never to a null sender (RFC 3834 2, RFC 5321 4.5.5), nor to mail that says it is
  automatic (`Auto-Submitted` other than `no`, section 5), nor to lists (`List-Id` and
  the other RFC 2369 / RFC 2919 fields, `Precedence: bulk / list / junk`), nor to
  senders that are robots by name (`mailer-daemon`, `owner-*`, `*-request`, `noreply`:
  section 2's advice), nor when the mailbox is in neither To nor Cc (section 3.1.1);
- once per correspondent per 7 days (section 2; `Store.claim_auto_reply`);
- the reply has `Auto-Submitted: auto-replied` (section 5.2), `In-Reply-To` and
  `References` (section 3.1.4), goes to the envelope sender (the Return-Path, section
  4). Its own envelope sender is the mailbox, not the null path section 3.3 suggests:
  the one submission path sends only as an address the actor owns, and the answer to
  an automatic reply is stopped by its `Auto-Submitted` field, which every responder
  that follows RFC 3834 (this one included) honours.

Forwarding: the message as the mailbox's reader sees it (decrypted where the server
holds the key) goes on attached (`message/rfc822`, RFC 2046 5.2.1) to a message From
the mailbox, to the addresses of the setting, all in the space of trust (checked when
set and again by `submit`). The copy is marked `X-MSS-Forwarded-By`: a message that
already has that field is not forwarded again (no loops between two mailboxes that
forward to each other). "Keep a copy" off: the original is removed from the INBOX
once the forward is accepted (audited as the mailbox's component's expunge).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, getaddresses
from typing import Any

from mssmail.delivery.submission import SubmitRefused, submit
from mssmail.mime import headers as mime_headers
from mssmail.store import settings as box_settings
from mssmail.store.actors import Actor
from mssmail.store.jobs import JobItem, LeaseLost, retry_delay

log = logging.getLogger("mss.automail")
ACTOR = Actor.system("automail")
REPLY_KIND = box_settings.REPLY_KIND
FORWARD_KIND = box_settings.FORWARD_KIND
POLL_SECONDS = 2.0
LEASE_SECONDS = 120.0
MAX_ATTEMPTS = 8
FORWARDED_BY = "X-MSS-Forwarded-By"
LIST_FIELDS = ("list-id", "list-post", "list-unsubscribe", "list-help", "list-subscribe", "list-owner",
               "list-archive")
ROBOT_LOCALS = ("mailer-daemon", "postmaster", "listserv", "majordomo", "noreply", "no-reply", "ne-pas-repondre",
                "nepasrepondre")
DEFAULT_SUBJECT = "Absence"


def paris_today() -> Any:
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo("Europe/Paris")).date()


def robot_sender(address: str) -> bool:
    """RFC 3834 section 2: senders that are software, by their name."""
    local = address.rsplit("@", 1)[0].lower()
    return (local in ROBOT_LOCALS or local.startswith("owner-") or local.endswith("-request")
            or local.startswith("bounce"))


def why_not_reply(headers: mime_headers.Headers, sender: str, mailbox: str) -> str | None:
    """Why this message gets no out-of-office reply (None: it gets one)."""
    from mssmail.smtp.policy import is_null_sender

    if is_null_sender(sender):
        return "null sender"
    if sender.lower() == mailbox:
        return "own message"
    if robot_sender(sender):
        return "automatic sender"
    auto = (headers.get("auto-submitted") or "no").split(";")[0].strip().lower()
    if auto != "no":
        return f"auto-submitted: {auto}"
    precedence = (headers.get("precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return f"precedence: {precedence}"
    if any(name in headers for name in LIST_FIELDS):
        return "mailing list"
    if FORWARDED_BY.lower() in headers:
        return "forwarded copy"
    visible = {a.lower() for _n, a in getaddresses(headers.get_all("to") + headers.get_all("cc")) if a}
    if mailbox not in visible:
        return "not addressed in To or Cc"
    return None


def build_reply(mailbox: str, display_name: str, to: str, original: mime_headers.Headers,
                settings: dict[str, Any]) -> bytes:
    ooo = settings.get("out_of_office") or {}
    message = EmailMessage(policy=mime_headers.SMTP_POLICY)
    message["From"] = formataddr((display_name, mailbox)) if display_name else mailbox
    message["To"] = to
    original_subject = (mime_headers.decode_words(original.get("subject") or "")).strip()
    subject = str(ooo.get("subject") or "").strip()
    if not subject:
        subject = f"{DEFAULT_SUBJECT} : {original_subject}" if original_subject else DEFAULT_SUBJECT
    message["Subject"] = subject
    message["Auto-Submitted"] = "auto-replied"
    message_id = (original.get("message-id") or "").strip()
    if message_id.startswith("<") and message_id.endswith(">") and len(message_id) < 1000:
        message["In-Reply-To"] = message_id
        references = (original.get("references") or "").split()[-10:]
        message["References"] = " ".join([*references, message_id])
    message.set_content(str(ooo.get("text") or ""), charset="utf-8")
    return message.as_bytes()


def build_forward(mailbox: str, display_name: str, addresses: list[str], original: bytes,
                  headers: mime_headers.Headers, received: datetime | None) -> bytes:
    """The forward: a short French text, then the original attached as it is stored,
    byte for byte (a `message/rfc822` part may not be re-encoded, RFC 2046 5.2.1, and an
    S/MIME signature inside must stay checkable)."""
    top = EmailMessage(policy=mime_headers.SMTP_POLICY)
    top["From"] = formataddr((display_name, mailbox)) if display_name else mailbox
    top["To"] = ", ".join(addresses)
    subject = mime_headers.decode_words(headers.get("subject") or "").strip()
    top["Subject"] = f"Tr: {subject}" if subject else "Tr: (sans objet)"
    top[FORWARDED_BY] = mailbox
    top["Auto-Submitted"] = "auto-generated"
    sender = mime_headers.decode_words(headers.get("from") or "").strip() or "(expéditeur inconnu)"
    when = ""
    if received is not None:
        from zoneinfo import ZoneInfo

        when = received.astimezone(ZoneInfo("Europe/Paris")).strftime(" le %d/%m/%Y à %H:%M")
    text = EmailMessage(policy=mime_headers.SMTP_POLICY)
    text.set_content(f"Message reçu par {mailbox}{when}, transféré automatiquement.\n"
                     f"Expéditeur d'origine : {sender}\n", charset="utf-8")
    text_part = text.as_bytes().replace(b"MIME-Version: 1.0\r\n", b"", 1)
    head = top.as_bytes().rstrip(b"\r\n") + b"\r\n"
    boundary = f"=_mss_{secrets.token_hex(12)}".encode()
    while boundary in original:
        boundary = f"=_mss_{secrets.token_hex(12)}".encode()
    body = original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    encoding = b"7bit" if body.isascii() else b"8bit"
    return (head + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n\r\n"
            + b"--" + boundary + b"\r\n" + text_part.rstrip(b"\r\n") + b"\r\n"
            + b"--" + boundary + b"\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n"
            + b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n" + body
            + b"--" + boundary + b"--\r\n")


class AutoMailWorker:
    """The `automail` component: one job at a time, polled from the job table."""

    name = "automail"

    def __init__(self, config: Any, store: Any, *, poll: float = POLL_SECONDS) -> None:
        self.config = config
        self.store = store
        self.poll = poll
        self.worker = f"{socket.gethostname()}:{os.getpid()}:automail"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()

    async def start(self) -> list[str]:
        self._task = asyncio.create_task(self._run(), name="automail-poller")
        return [f"automail: out-of-office and forwarding (poll every {self.poll:g}s)"]

    async def stop(self, grace: float) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=max(grace, 0.1))

    async def _run(self) -> None:
        while not self._stopping:
            busy = False
            try:
                busy = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("automail: polling the job table failed")
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll)
            self._wake.clear()

    async def run_once(self, now: datetime | None = None) -> bool:
        """Claim and run one due job; whether there was one."""
        kinds = [REPLY_KIND, FORWARD_KIND]
        if not await self.store.run(lambda: self.store.has_due_jobs(kinds, now=now)):
            return False
        jobs = await self.store.run(lambda: self.store.claim_jobs([REPLY_KIND, FORWARD_KIND], self.worker,
                                                                  LEASE_SECONDS, now=now))
        for job in jobs:
            await self.run_job(job)
        return bool(jobs)

    async def run_job(self, job: JobItem) -> None:
        try:
            outcome = await (self.reply(job) if job.kind == REPLY_KIND else self.forward(job))
        except LeaseLost:
            return
        except Exception as exc:  # a bug or the store: retried, then dead
            log.exception("automail: job %s (%s) failed", job.id, job.kind)
            outcome = f"temporary: {type(exc).__name__}: {exc}"
        if outcome.startswith("temporary") and job.attempts < MAX_ATTEMPTS:
            retry_at = datetime.now(UTC) + retry_delay(job.attempts, first=30.0, longest=3600.0)
            with contextlib.suppress(LeaseLost):
                await self.store.run(self.store.fail_job, job.id, self.worker, outcome, retry_at=retry_at)
            return
        log.info("automail: %s for %s: %s", job.kind, job.mailbox, outcome)
        with contextlib.suppress(LeaseLost):
            await self.store.run(lambda: self.store.complete_job(job.id, self.worker, progress={"outcome": outcome}))

    async def _message(self, job: JobItem) -> tuple[Any, int, bytes, datetime | None] | None:
        """(ref, uid, bytes as the reader sees them, arrival) of the job's message, None
        when it is gone; an audited read by `system:automail`."""
        if job.message_id is None:
            return None
        located = await self.store.run(self.store.locate_message, job.message_id)
        if located is None:
            return None
        ref = await self.store.run(self.store.open_folder, ACTOR, located.mailbox, located.folder)
        metas, data, _marked = await self.store.run(lambda: self.store.messages_read(
            ref, [located.uid], mark_seen=False, with_cache=False))
        if not metas or located.uid not in data:
            return None
        return ref, located.uid, data[located.uid], getattr(metas[0], "internal_date", None)

    async def _box(self, address: str) -> tuple[dict[str, Any], str]:
        settings = await self.store.run(self.store.mailbox_settings, ACTOR, address)
        info = await self.store.run(self.store.mailbox_info, address)
        return settings, str(info.get("display_name") or "")

    async def reply(self, job: JobItem) -> str:
        mailbox = job.mailbox
        sender = str(job.payload.get("sender", "")).strip().lower()
        settings, name = await self._box(mailbox)
        if not box_settings.out_of_office_active(settings, paris_today()):
            return "skipped: out-of-office not active"
        found = await self._message(job)
        if found is None:
            return "skipped: message gone"
        _ref, _uid, raw, _when = found
        headers = mime_headers.parse(raw)
        why = why_not_reply(headers, sender, mailbox)
        if why is not None:
            return f"skipped: {why}"
        if not await self.store.run(self.store.claim_auto_reply, mailbox, sender):
            return "skipped: answered within 7 days"
        reply = build_reply(mailbox, name, sender, headers, settings)
        result = await submit(self.store, self.config, mailbox, mailbox, [sender], reply, service="autoreply")
        if isinstance(result, SubmitRefused):
            return f"{'temporary' if result.code < 500 else 'refused'}: {result.reply}"
        return f"replied: {result.queue_id}"

    async def forward(self, job: JobItem) -> str:
        mailbox = job.mailbox
        settings, name = await self._box(mailbox)
        addresses = box_settings.forward_addresses(settings)
        if not addresses:
            return "skipped: forwarding off"
        found = await self._message(job)
        if found is None:
            return "skipped: message gone"
        ref, uid, raw, when = found
        headers = mime_headers.parse(raw)
        if FORWARDED_BY.lower() in headers:
            return "skipped: already a forwarded copy"
        message = build_forward(mailbox, name, addresses, raw, headers, when)
        result = await submit(self.store, self.config, mailbox, mailbox, addresses, message, service="forward")
        if isinstance(result, SubmitRefused):
            return f"{'temporary' if result.code < 500 else 'refused'}: {result.reply}"
        keep = bool((settings.get("forward") or {}).get("keep_copy", True))
        if not keep:
            await self.store.run(lambda: self.store.set_flags(ref, [uid], "+", ["\\Deleted"]))
            await self.store.run(lambda: self.store.expunge(ref, [uid]))
        return f"forwarded: {result.queue_id}{'' if keep else ', original removed'}"


def automail_component(ctx: Any) -> AutoMailWorker | None:
    from mssmail.store.jobs import JobOps

    if not isinstance(ctx.store, JobOps):
        return None
    return AutoMailWorker(ctx.config, ctx.store)
