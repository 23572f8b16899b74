"""Byte-exact MIME helpers for signing (sans-IO).

A detached signature covers the exact bytes of a body part (RFC 8551 3.1.1: canonical
form, CRLF line ends), so multipart bodies are split on their raw bytes here; the stdlib
`email` package is only used to read header values.
"""

from __future__ import annotations

import base64
import re
import secrets
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

_LONE_LF = re.compile(rb"(?<!\r)\n")
_LONE_CR = re.compile(rb"\r(?!\n)")


def canonical(data: bytes) -> bytes:
    """CRLF line ends everywhere (RFC 5322 2.3, RFC 8551 3.1.1)."""
    if b"\n" not in data and b"\r" not in data:
        return data
    return _LONE_LF.sub(b"\r\n", _LONE_CR.sub(b"\r\n", data))


def split_entity(entity: bytes) -> tuple[bytes, bytes]:
    """(header block including its final CRLF, body) of a canonical entity."""
    if entity.startswith(b"\r\n"):
        return b"", entity[2:]
    pos = entity.find(b"\r\n\r\n")
    if pos < 0:
        return entity if entity.endswith(b"\r\n") else entity + b"\r\n", b""
    return entity[: pos + 2], entity[pos + 4:]


def header_fields(header_block: bytes) -> list[bytes]:
    """Each header field with its folded continuation lines, CRLF included."""
    fields: list[bytes] = []
    for line in header_block.split(b"\r\n")[:-1] if header_block.endswith(b"\r\n") else header_block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        elif line:
            fields.append(line + b"\r\n")
    return fields


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def parse_headers(header_block: bytes) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(header_block + b"\r\n")


def split_content_headers(header_block: bytes) -> tuple[bytes, bytes]:
    """(outer headers, Content-* headers): what a signed/encrypted wrapper keeps outside."""
    outer, content = b"", b""
    for f in header_fields(header_block):
        name = field_name(f)
        if name.startswith("content-"):
            content += f
        elif name != "mime-version":
            outer += f
    return outer, content


def multipart_parts(body: bytes, boundary: str) -> list[bytes]:
    """The raw body parts of a canonical multipart body (RFC 2046 5.1.1).

    The CRLF before a delimiter belongs to the delimiter, not to the part before it.
    """
    delim = b"--" + boundary.encode("ascii", "replace")
    data = b"\r\n" + body
    pieces = re.split(rb"\r\n" + re.escape(delim) + rb"(--)?[ \t]*(?=\r\n|$)", data)
    # pieces: preamble, (close-marker, part)...; a part starts after the delimiter's line end
    parts: list[bytes] = []
    i = 1
    while i + 1 < len(pieces):
        closing, chunk = pieces[i], pieces[i + 1]
        if closing:
            break
        parts.append(chunk[2:] if chunk.startswith(b"\r\n") else chunk)
        i += 2
    return parts


def new_boundary() -> str:
    return "----=_mss_" + secrets.token_hex(12)


def b64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines (RFC 2045 6.8), CRLF-terminated."""
    encoded = base64.b64encode(data)
    return b"".join(encoded[i:i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def decode_body(header_block: bytes, body: bytes) -> bytes:
    """The payload of a leaf part after its Content-Transfer-Encoding."""
    msg = parse_headers(header_block)
    cte = (msg.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    if cte == "base64":
        return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==", validate=False)
    if cte == "quoted-printable":
        import quopri

        return quopri.decodestring(body)
    return body
