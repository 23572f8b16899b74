"""The parsed summary kept beside each message, for listings without reading the blob."""

from __future__ import annotations

import contextlib
import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from email.parser import BytesParser
from email.policy import compat32

MAX_FIELD = 4000


@dataclass(frozen=True)
class Summary:
    from_addr: str
    to_addrs: str
    subject: str
    date: datetime | None
    message_id: str
    has_attachments: bool


def _decode(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    # Malformed encoded-words: keep the raw header text.
    with contextlib.suppress(Exception):
        text = str(make_header(decode_header(text)))
    return " ".join(text.split())[:MAX_FIELD]


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _has_attachments(msg: EmailMessage) -> bool:
    if not msg.is_multipart():
        return (msg.get("Content-Disposition", "") or "").lower().startswith("attachment")
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = (part.get("Content-Disposition", "") or "").lower()
        if disposition.startswith("attachment") or (part.get_filename() and part is not msg):
            return True
    return False


def summarize(raw: bytes) -> Summary:
    """Never raises: broken MIME gives empty fields, not an error."""
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
    except Exception:
        return Summary("", "", "", None, "", False)
    try:
        attachments = _has_attachments(msg)
    except Exception:
        attachments = False
    to = ", ".join(_decode(v) for v in (msg.get_all("To") or []) + (msg.get_all("Cc") or []))
    return Summary(
        from_addr=_decode(msg.get("From")),
        to_addrs=to[:MAX_FIELD],
        subject=_decode(msg.get("Subject")),
        date=_date(msg.get("Date")),
        message_id=_decode(msg.get("Message-ID"))[:998],
        has_attachments=attachments,
    )
