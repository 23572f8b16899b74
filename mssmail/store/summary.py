"""The parsed summary kept beside each message, for listings without reading the blob."""

from __future__ import annotations

import contextlib
import email.utils
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32

from mssmail.store import headerscan

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


def _parts(raw: bytes, body: int, end: int, boundary: str) -> Iterator[tuple[int, int]]:
    """(start after the delimiter line, end) of each part of the multipart body at
    raw[body:end], found by `find` on the delimiter: no line-by-line parse."""
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
        if line_end >= 0:
            yield line_end + 1, stop


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
    for part_start, stop in _parts(raw, body, end, boundary):
        part_headers = _headers(raw, part_start, stop)
        if _has_attachments(raw, part_headers, part_start, stop, depth + 1):
            return True
    return False


def summarize_reference(raw: bytes) -> Summary:
    """The email-package implementation, kept as the reference the fast path must agree
    with (and falls back to). Never raises: broken MIME gives empty fields, not an error.

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


_TOP_FIELDS = frozenset({b"from", b"to", b"cc", b"subject", b"date", b"message-id",
                         b"content-type", b"content-disposition"})
_PART_FIELDS = frozenset({b"content-type", b"content-disposition"})


def _block_end(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """`_header_end` without scanning the whole body for a bare-LF blank line when a CRLF
    one comes first: same result, a search bounded by the CRLF blank line."""
    crlf = raw.find(b"\r\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, end if crlf < 0 else crlf + 1)
    if crlf >= 0 and lf < 0:
        return crlf + 2, crlf + 4
    if lf >= 0:
        return lf + 1, lf + 2
    return end, end


def _fast_has_attachments(raw: bytes, fields: headerscan.Fields, start: int, end: int, depth: int) -> bool:
    """`_has_attachments` on header fields read by headerscan (Unsure when in doubt)."""
    content_type = fields.get(b"content-type")
    ctype = headerscan.ascii_text(content_type[0]) if content_type else None
    if headerscan.content_maintype(ctype) != "multipart":
        disposition_field = fields.get(b"content-disposition")
        disposition = headerscan.ascii_text(disposition_field[0]) if disposition_field else None
        return ((disposition or "").lower().startswith("attachment")
                or (depth > 0 and headerscan.has_filename(disposition, ctype)))
    boundary = headerscan.get_boundary(ctype or "")
    if not isinstance(boundary, str) or not boundary or depth >= MAX_DEPTH:
        return False
    _, body = _block_end(raw, start, end)
    for part_start, stop in _parts(raw, body, end, boundary):
        header_end, _ = _block_end(raw, part_start, stop)
        part = headerscan.scan_fields(raw[part_start:header_end], _PART_FIELDS)
        if _fast_has_attachments(raw, part, part_start, stop, depth + 1):
            return True
    return False


def _decode_text(value: bytes | None) -> str:
    """`_decode` of a raw field value: the email package only when there may be encoded words."""
    if value is None:
        return ""
    text = headerscan.as_text(value)
    if "=?" in text:
        return _decode(text)
    return " ".join(text.split())[:MAX_FIELD]


def summarize_fast(raw: bytes) -> Summary:
    """One scan per header block, no email-package parse; raises headerscan.Unsure
    on input it does not reproduce exactly."""
    header_end, _ = _block_end(raw, 0, len(raw))
    fields = headerscan.scan_fields(raw[:header_end], _TOP_FIELDS)
    attachments = _fast_has_attachments(raw, fields, 0, len(raw), 0)
    addressees = fields.get(b"to", []) + fields.get(b"cc", [])
    to = ", ".join(_decode_text(v) for v in addressees)
    date = headerscan.first(fields, b"date")
    return Summary(
        from_addr=_decode_text(headerscan.first(fields, b"from")),
        to_addrs=to[:MAX_FIELD],
        subject=_decode_text(headerscan.first(fields, b"subject")),
        date=_date(None if date is None else headerscan.as_text(date)),
        message_id=_decode_text(headerscan.first(fields, b"message-id"))[:998],
        has_attachments=attachments,
    )


def summarize(raw: bytes) -> Summary:
    """Never raises: broken MIME gives empty fields, not an error.

    The fast path reads header blocks itself; whatever it is not sure to read as the
    email package does goes to summarize_reference.
    """
    try:
        return summarize_fast(raw)
    except Exception:  # headerscan.Unsure, or anything unforeseen: the reference decides
        return summarize_reference(raw)
