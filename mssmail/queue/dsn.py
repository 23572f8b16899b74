"""Delivery status notifications (RFC 3464), built as bytes (pure, no I/O).

multipart/report; report-type=delivery-status (RFC 6522) with three parts: a
human-readable text (French then English), message/delivery-status (per-message and
per-recipient fields, RFC 3464 section 2), and text/rfc822-headers of the original.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

FAILED = "failed"
DELAYED = "delayed"
# RFC 3463 enhanced status codes used by the queue.
STATUS_EXPIRED = "5.4.7"  # delivery time expired
STATUS_NO_ROUTE = "5.4.4"  # unable to route
STATUS_DELAYED = "4.4.7"
STATUS_GENERIC_PERMANENT = "5.0.0"
STATUS_GENERIC_TEMPORARY = "4.0.0"


@dataclass(frozen=True)
class RecipientStatus:
    address: str
    action: str  # "failed" or "delayed" (RFC 3464 2.3.3)
    status: str  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str = ""  # the remote's reply, e.g. "550 5.1.1 no such user"
    remote_mta: str = ""


def status_from_reply(code: int, text: str, permanent: bool) -> str:
    """The enhanced status of an SMTP reply, or a generic one of the right class."""
    first = text.strip().split(" ", 1)[0] if text else ""
    parts = first.split(".")
    if len(parts) == 3 and all((p.isascii() and p.isdigit()) for p in parts) and parts[0] in "245":
        return first
    if permanent or 500 <= code < 600:
        return STATUS_GENERIC_PERMANENT
    return STATUS_GENERIC_TEMPORARY


def original_headers(raw: bytes) -> bytes:
    """The header section of the original message (up to the first empty line)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(sep)
        if index >= 0:
            return raw[:index + len(sep) // 2]
    return raw


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _header_safe(value: str) -> str:
    """No CR/LF may reach a header field from a remote reply (header injection)."""
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())[:900]


def _human_text(action: str, recipients: list[RecipientStatus], hostname: str, expiry: str) -> str:
    lines_fr = []
    lines_en = []
    for r in recipients:
        reason = r.diagnostic or r.status
        lines_fr.append(f"  <{r.address}> : {reason}")
        lines_en.append(f"  <{r.address}>: {reason}")
    if action == FAILED:
        fr = ("Votre message n'a pas pu être remis aux destinataires suivants ; "
              "le serveur a cessé d'essayer :")
        en = "Your message could not be delivered to the following recipients; the server gave up:"
    else:
        fr = ("Votre message n'a pas encore pu être remis aux destinataires suivants. "
              f"Le serveur continue d'essayer jusqu'au {expiry} ; vous n'avez rien à faire.")
        en = ("Your message has not yet been delivered to the following recipients. "
              f"The server keeps trying until {expiry}; you need not do anything.")
    return (
        f"Ceci est un message automatique du serveur {hostname}.\n\n{fr}\n\n"
        + "\n".join(lines_fr)
        + f"\n\n----- English -----\n\nThis is an automatic message from the server {hostname}.\n\n{en}\n\n"
        + "\n".join(lines_en) + "\n"
    )


def build_dsn(
    *,
    reporting_mta: str,
    sender: str,
    recipients: list[RecipientStatus],
    original: bytes,
    arrival_date: datetime,
    now: datetime,
    envelope_id: str = "",
    expiry: datetime | None = None,
    queue_id: str = "",
) -> bytes:
    """A complete RFC 5322 message reporting `recipients` back to `sender`."""
    if not recipients:
        raise ValueError("a DSN reports at least one recipient")
    actions = {r.action for r in recipients}
    if not actions <= {FAILED, DELAYED} or len(actions) != 1:
        raise ValueError("a DSN reports recipients of one action, 'failed' or 'delayed'")
    action = actions.pop()
    reporting_mta = _header_safe(reporting_mta)
    boundary = f"=_mss_dsn_{uuid.uuid4().hex}"
    expiry_text = format_datetime(expiry) if expiry else ""
    subject = ("Échec de remise / Delivery failure" if action == FAILED
               else "Remise retardée / Delivery delayed")
    headers = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{_header_safe(sender)}>\r\n"
        f"Subject: {Header(subject, 'utf-8').encode()}\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{reporting_mta}>\r\n"
        # RFC 3834: an automatic reply must not trigger other automatic replies.
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
    ).encode()
    # RFC 3464 2.2: per-message fields.
    per_message = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envelope_id:
        per_message.append(f"Original-Envelope-Id: {_header_safe(envelope_id)}")
    if queue_id:
        per_message.append(f"X-Mss-Queue-ID: {_header_safe(queue_id)}")
    per_message.append(f"Arrival-Date: {format_datetime(arrival_date)}")
    blocks = ["\r\n".join(per_message)]
    # RFC 3464 2.3: per-recipient fields.
    for r in recipients:
        fields = [f"Final-Recipient: rfc822; {_header_safe(r.address)}",
                  f"Action: {r.action}", f"Status: {r.status}"]
        if r.remote_mta:
            fields.append(f"Remote-MTA: dns; {_header_safe(r.remote_mta)}")
        if r.diagnostic:
            fields.append(f"Diagnostic-Code: smtp; {_header_safe(r.diagnostic)}")
        fields.append(f"Last-Attempt-Date: {format_datetime(now)}")
        if r.action == DELAYED and expiry is not None:
            fields.append(f"Will-Retry-Until: {expiry_text}")
        blocks.append("\r\n".join(fields))
    status_body = ("\r\n\r\n".join(blocks) + "\r\n").encode()
    human = _crlf(_human_text(action, recipients, reporting_mta, expiry_text))
    body = b"".join([
        b"This is a MIME-encapsulated delivery status notification.\r\n\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        human,
        f"\r\n--{boundary}\r\n".encode(),
        b"Content-Type: message/delivery-status\r\n\r\n",
        status_body,
        f"\r\n--{boundary}\r\n".encode(),
        b"Content-Type: text/rfc822-headers\r\n\r\n",
        original_headers(original).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    return headers + b"\r\n" + body
