"""The parsed summary kept beside each message, for listings without reading the blob.

Read with mssmail.mime, the reading IMAP and crypto use: `summarize_reference` walks
the header blocks with `headers.parse`; `summarize_fast` takes the regex fast path
(`mime.fastpath`) for the same fields and falls back to the reference on any block it
is not sure to read identically. Both walk the parts with `tree.split_offsets` and read
parameters with `params`, so the two differ only in how a block's fields are found.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mssmail.mime import fastpath, params, tree
from mssmail.mime import headers as hdr

MAX_FIELD = 4000
MAX_DEPTH = 20


@dataclass(frozen=True)
class Summary:
    from_addr: str
    to_addrs: str
    subject: str
    date: datetime | None
    message_id: str
    has_attachments: bool
    # The message holds HPRIM Net's LAB marker (`****LAB****`) outside any attachment:
    # an Apicrypt-style result whose text body is the report. Not stored: it only asks
    # for a results-index job in a mailbox without connector rules, as an attachment
    # does (mssmail/store/connectors.py `route_jobs`); the job parses the body and keeps
    # it only if it is HPRIM (connectors/routing.py `body_is_hprim_net`).
    hprim_body: bool = False


# connectors/formats/hprim_net.py MARKER_LAB (the store does not import the connectors).
HPRIM_LAB_MARKER = b"****LAB****"


def _decode(value: bytes | None) -> str:
    """A field value unfolded, RFC 2047 words decoded, white space runs made one space."""
    if value is None:
        return ""
    if b"=?" not in value and value.isascii():  # the usual case: nothing to decode
        return " ".join(value.decode("ascii").split())[:MAX_FIELD]
    return " ".join(hdr.decode_words(value).split())[:MAX_FIELD]


def _date(value: bytes | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(hdr.text(hdr.unfold(value)))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# Fields of one header block, {lowercase name: [values]} (Field.value octets), and where
# its body starts.
Fields = dict[bytes, list[bytes]]
ReadFields = Callable[[bytes, int, int, frozenset[bytes]], tuple[Fields, int]]

_TOP_FIELDS = frozenset({b"from", b"to", b"cc", b"subject", b"date", b"message-id",
                         b"content-type", b"content-disposition"})
_PART_FIELDS = frozenset({b"content-type", b"content-disposition"})


def _reference_fields(raw: bytes, start: int, end: int, wanted: frozenset[bytes]) -> tuple[Fields, int]:
    fields_end, body = hdr.block_offsets(raw, start, end)
    out: Fields = {}
    for f in hdr.parse(raw[start:fields_end] + b"\r\n").fields:
        key = f.name.lower()
        if key in wanted:
            out.setdefault(key, []).append(f.value)
    return out, body


def _fast_fields(raw: bytes, start: int, end: int, wanted: frozenset[bytes]) -> tuple[Fields, int]:
    fields_end, body = hdr.block_offsets(raw, start, end)
    return fastpath.scan_fields(raw[start:fields_end], wanted), body


def _has_attachments(read: ReadFields, raw: bytes, fields: Fields, body: int, end: int, depth: int) -> bool:
    """Walk the MIME tree of raw[..:end] (body at `body`) by boundaries, reading only part headers:
    a 10 MB attachment costs a few `find` calls, not a line-by-line parse. A part is an
    attachment if its disposition says so (RFC 2183 2.2), or, below the top, if it has a
    file name (RFC 2183 2.3, or the Content-Type name many mailers still write)."""
    found = fields.get(b"content-type")
    content_type = found[0] if found else None
    if not params.media_type(content_type).startswith("multipart/"):
        found = fields.get(b"content-disposition")
        disposition = found[0] if found else None
        if disposition is not None and params.leading_value(disposition) == "attachment":
            return True
        if depth == 0:
            return False
        # A parameter name is never encoded: without the letters, no need to parse.
        name = None
        if disposition is not None and b"filename" in disposition.lower():
            name = params.parse_structured(disposition).get("filename")
        if name is None and content_type is not None and b"name" in content_type.lower():
            name = params.parse_structured(content_type).get("name")
        return bool(name and name.strip())
    boundary = params.parse_structured(content_type).get("boundary")
    if not boundary or depth >= MAX_DEPTH:
        return False
    spans, _ = tree.split_offsets(raw, body, end, boundary.encode("utf-8", "surrogateescape"))
    for part_start, part_end in spans:
        part, part_body = read(raw, part_start, part_end, _PART_FIELDS)
        if _has_attachments(read, raw, part, part_body, part_end, depth + 1):
            return True
    return False


def _summarize(read: ReadFields, raw: bytes) -> Summary:
    fields, body = read(raw, 0, len(raw), _TOP_FIELDS)
    attachments = _has_attachments(read, raw, fields, body, len(raw), 0)
    addressees = fields.get(b"to", []) + fields.get(b"cc", [])
    return Summary(
        from_addr=_decode(fastpath.first(fields, b"from")),
        to_addrs=", ".join(_decode(v) for v in addressees)[:MAX_FIELD],
        subject=_decode(fastpath.first(fields, b"subject")),
        date=_date(fastpath.first(fields, b"date")),
        message_id=_decode(fastpath.first(fields, b"message-id"))[:998],
        has_attachments=attachments,
        # A C substring search over bytes already in memory (microseconds for a 10 KB
        # mail); a body in base64 hides it, as it would from most readers of HPRIM.
        hprim_body=not attachments and HPRIM_LAB_MARKER in raw,
    )


def summarize_reference(raw: bytes) -> Summary:
    """Every header block read by `headers.parse`: the reference the fast path must
    agree with (and falls back to)."""
    return _summarize(_reference_fields, raw)


def summarize_fast(raw: bytes) -> Summary:
    """Header blocks read by the regex fast path; raises fastpath.Unsure on a block it
    does not read exactly as `headers.parse` does."""
    return _summarize(_fast_fields, raw)


def summarize(raw: bytes) -> Summary:
    """Never raises: broken MIME gives empty fields, not an error."""
    try:
        return summarize_fast(raw)
    except fastpath.Unsure:
        pass
    try:
        return summarize_reference(raw)
    except Exception:
        return Summary("", "", "", None, "", False)
