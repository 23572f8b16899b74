"""The parsed summary kept beside each message, for listings without reading the blob."""

from __future__ import annotations

import contextlib
import email.utils
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
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


MAX_DEPTH = 20


def _header_end(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(end of the header block, start of the body) of the entity at raw[start:end]:
    the first empty line, CRLF or bare LF; offsets, so that no body is ever copied."""
    stop = len(raw) if end is None else end
    crlf, lf = raw.find(b"\r\n\r\n", start, stop), raw.find(b"\n\n", start, stop)
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        return crlf + 2, crlf + 4
    if lf >= 0:
        return lf + 1, lf + 2
    return stop, stop


def _headers(raw: bytes, start: int = 0, end: int | None = None) -> EmailMessage:
    header_end, _ = _header_end(raw, start, end)
    return BytesHeaderParser(policy=compat32).parsebytes(raw[start:header_end])


def _has_attachments(raw: bytes, headers: EmailMessage, start: int, end: int, depth: int = 0) -> bool:
    """Walk the MIME tree of raw[start:end] by boundaries, parsing only part headers:
    a 10 MB attachment costs a few `find` calls, not a line-by-line parse."""
    if headers.get_content_maintype() != "multipart":
        disposition = (headers.get("Content-Disposition", "") or "").lower()
        return disposition.startswith("attachment") or (depth > 0 and bool(headers.get_filename()))
    boundary = headers.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or depth >= MAX_DEPTH:
        return False
    _, body = _header_end(raw, start, end)
    delimiter = b"--" + boundary.encode("utf-8", "replace")
    at, delimiters = body, []
    while True:
        found = raw.find(delimiter, at, end)
        if found < 0:
            break
        if found == body or raw[found - 1:found] == b"\n":
            delimiters.append(found)
        at = found + len(delimiter)
    if delimiters and raw[delimiters[-1] + len(delimiter):delimiters[-1] + len(delimiter) + 2] != b"--":
        delimiters.append(end)  # truncated: no closing delimiter, the last part runs to the end
    for begin, stop in itertools.pairwise(delimiters):
        line_end = raw.find(b"\n", begin, stop)
        if line_end < 0:
            continue
        part_headers = _headers(raw, line_end + 1, stop)
        if _has_attachments(raw, part_headers, line_end + 1, stop, depth + 1):
            return True
    return False


def summarize(raw: bytes) -> Summary:
    """Never raises: broken MIME gives empty fields, not an error.

    Only header blocks are parsed: the message's own, then each part's when looking
    for attachments.
    """
    try:
        msg = _headers(raw)
    except Exception:
        return Summary("", "", "", None, "", False)
    try:
        attachments = _has_attachments(raw, msg, 0, len(raw))
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
