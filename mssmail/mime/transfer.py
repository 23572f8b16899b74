"""Byte-exact entity helpers for signing and encryption, and transfer decoding (sans-IO).

A detached signature covers the exact bytes of a body part (RFC 8551 3.1.1: canonical
form, CRLF line ends), so entities are cut on their raw bytes here, by the same rules as
the part tree (`headers.header_length`, `tree.split_offsets`); header values are read by
`headers.parse`. Moved from crypto/mime.py so that what crypto signs and verifies is cut
exactly as IMAP and the summary cut it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterator

from mssmail.mime import headers as hdr
from mssmail.mime import tree

_LONE_LF = re.compile(rb"(?<!\r)\n")
_LONE_CR = re.compile(rb"\r(?!\n)")


def canonical(data: bytes) -> bytes:
    """CRLF line ends everywhere (RFC 5322 2.3, RFC 8551 3.1.1)."""
    if is_canonical(data):  # three C-speed counts, no copy (the regexes below copy)
        return data
    return _LONE_LF.sub(b"\r\n", _LONE_CR.sub(b"\r\n", data))


def split_entity(entity: bytes) -> tuple[bytes, bytes]:
    """(header block including its final CRLF, body) of a canonical entity."""
    fields_end, body = hdr.block_offsets(entity)
    if fields_end == body:  # no empty line: all header, no body (RFC 5322 2.1 allows it)
        return (entity if entity.endswith(b"\r\n") else entity + b"\r\n"), b""
    return entity[:fields_end], entity[body:]


def header_fields(header_block: bytes) -> list[bytes]:
    """The header block in pieces, each field with its folded continuation lines, CRLF
    included, as `headers.parse` splits it; a line that is not a field stays with the
    piece before it, so that joining the pieces gives the block back."""
    parsed = hdr.parse(header_block + b"\r\n" if header_block.endswith(b"\r\n") else header_block)
    pieces: list[bytes] = []
    previous = 0
    for f in parsed.fields:
        if f.start > previous:
            gap = header_block[previous:f.start]
            if pieces:
                pieces[-1] += gap
            else:
                pieces.append(gap)
        pieces.append(header_block[f.start:f.end])
        previous = f.end
    if previous < len(header_block):
        tail = header_block[previous:]
        if pieces:
            pieces[-1] += tail
        else:
            pieces.append(tail)
    return pieces


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def parse_headers(header_block: bytes) -> hdr.Headers:
    return hdr.parse(header_block if header_block.endswith(b"\r\n\r\n") else header_block + b"\r\n")


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
    """The raw body parts of a canonical multipart body (RFC 2046 5.1.1), as the part
    tree cuts them: the CRLF before a delimiter belongs to the delimiter."""
    return tree.split_multipart(body, boundary.encode("utf-8", "surrogateescape"))


def new_boundary() -> str:
    return "----=_mss_" + secrets.token_hex(12)


def body_offset(entity: bytes | bytearray) -> tuple[bytes, int]:
    """(header block including its final CRLF, index where the body starts): no body copy."""
    fields_end, body = hdr.block_offsets(entity)
    if fields_end == body:
        block = bytes(entity)
        return (block if block.endswith(b"\r\n") else block + b"\r\n"), len(entity)
    return bytes(entity[:fields_end]), body


def is_canonical(data: bytes | bytearray) -> bool:
    """True when every CR and LF is part of a CRLF pair (no copy, unlike canonical())."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") == pairs and data.count(b"\n") == pairs


_B64_LINE = 57  # input octets per 76-character base64 line (RFC 2045 6.8)
_B64_BATCH = 2048  # lines encoded per binascii call


def b64_lines_into(data: bytes | bytearray | memoryview, prefix: bytes = b"") -> bytearray:
    """`prefix` then `data` in base64, 76-character CRLF-terminated lines (RFC 2045 6.8).

    One output buffer of the exact size: batches of lines are encoded by binascii and laid
    out 76 columns at a time through strided memoryviews, so neither the whole unwrapped
    base64 text nor a list of lines ever exists.
    """
    src = memoryview(data).cast("B")
    full, rem = divmod(len(src), _B64_LINE)
    base = len(prefix)
    out = bytearray(base + full * 78 + ((rem + 2) // 3 * 4 + 2 if rem else 0))
    view = memoryview(out)
    view[:base] = prefix
    crs, lfs = b"\r" * _B64_BATCH, b"\n" * _B64_BATCH
    for first in range(0, full, _B64_BATCH):
        k = min(_B64_BATCH, full - first)
        enc = memoryview(binascii.b2a_base64(src[first * _B64_LINE:(first + k) * _B64_LINE], newline=False))
        region = view[base + first * 78:base + (first + k) * 78]
        for col in range(76):
            region[col::78] = enc[col::76]
        region[76::78] = crs[:k]
        region[77::78] = lfs[:k]
    if rem:
        view[base + full * 78:] = binascii.b2a_base64(src[full * _B64_LINE:], newline=False) + b"\r\n"
    return out


def b64_lines(data: bytes | bytearray | memoryview) -> bytes:
    """Base64 in 76-character lines (RFC 2045 6.8), CRLF-terminated."""
    return bytes(b64_lines_into(data))


def _b64_decode_lenient(body: bytes | bytearray | memoryview) -> bytes:
    """What can be read of damaged base64: non-alphabet octets skipped, padding restored,
    a dangling last character (4n+1 of them cannot be decoded) dropped. Never raises."""
    text = re.sub(rb"[^A-Za-z0-9+/]", b"", bytes(body))
    if len(text) % 4 == 1:
        text = text[:-1]
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=False)


_B64_CHUNK = 1 << 20


def b64_decode_into(body: bytes | bytearray | memoryview, reserve: int = 0) -> tuple[bytearray, int, int]:
    """(buffer, start, end): base64 `body` decoded into one buffer after `reserve` free octets.

    binascii skips line ends and other non-alphabet characters (non-strict mode); the body
    is decoded in line-aligned chunks so no second copy of the whole text is made. Input
    whose chunks do not hold whole 4-character groups falls back to the lenient decoder.
    """
    src = memoryview(body).cast("B")
    out = bytearray(reserve + len(src) * 3 // 4 + 3)
    view = memoryview(out)
    pos, n = 0, reserve
    try:
        while pos < len(src):
            cut = min(len(src), pos + _B64_CHUNK)
            if cut < len(src):
                nl = bytes(src[cut:cut + 200]).find(b"\n")
                cut = cut + nl + 1 if nl >= 0 else cut
            piece = binascii.a2b_base64(src[pos:cut])
            view[n:n + len(piece)] = piece
            n += len(piece)
            pos = cut
    except binascii.Error:
        view.release()
        piece = _b64_decode_lenient(src)
        out = bytearray(reserve + len(piece))
        out[reserve:] = piece
        return out, reserve, len(out)
    view.release()
    del out[n:]
    return out, reserve, n


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_ALPHABET)))
STREAM_CHUNK = 1 << 18


def iter_decoded(body: bytes | bytearray | memoryview, encoding: str,
                 chunk_size: int = STREAM_CHUNK) -> Iterator[bytes]:
    """A leaf's payload after its Content-Transfer-Encoding (RFC 2045 section 6), in pieces
    of about `chunk_size` decoded octets, so a 10 MB attachment is sent without a second
    10 MB copy beside the message. `b"".join(...)` is exactly the whole-body decoding:
    base64 as `_b64_decode_lenient` reads it (non-alphabet octets skipped, a dangling last
    character dropped, padding restored), quoted-printable as `decode_qp` (RFC 2045 6.7), any
    other encoding (7bit, 8bit, binary, unknown) as it is. Never raises.
    """
    src = memoryview(body).cast("B")
    size = max(4, chunk_size)
    encoding = encoding.strip().lower()
    if encoding == "base64":
        carry = b""
        step = size * 4 // 3
        for pos in range(0, len(src), step):
            text = carry + bytes(src[pos:pos + step]).translate(None, _NOT_B64)
            whole = len(text) - len(text) % 4
            carry = text[whole:]
            if whole:
                yield binascii.a2b_base64(text[:whole])
        if len(carry) > 1:  # 2 or 3 characters: a short last group (RFC 4648 section 4)
            yield binascii.a2b_base64(carry + b"=" * (-len(carry) % 4))
    elif encoding == "quoted-printable":
        # Cut only after a line end: a soft line break ("=" CRLF), an "=XX" escape and a
        # line's trailing padding stay within one piece, so each piece decodes as it
        # would inside the whole body.
        pos = 0
        while pos < len(src):
            cut = min(len(src), pos + size)
            if cut < len(src):
                line_end = bytes(src[pos:cut]).rfind(b"\n")
                if line_end >= 0:
                    cut = pos + line_end + 1
                else:  # one long line: take it whole
                    rest = bytes(src[cut:]).find(b"\n")
                    cut = len(src) if rest < 0 else cut + rest + 1
            yield decode_qp(src[pos:cut])
            pos = cut
    else:
        for pos in range(0, len(src), size):
            yield bytes(src[pos:pos + size])


_QP_PADDING = re.compile(rb"[ \t]+(?=\r?\n|\Z)")
_QP_CODE = re.compile(rb"=(?:([0-9A-Fa-f]{2})|\r?\n|\Z)")
_HEX = {b"%02X" % i: bytes([i]) for i in range(256)}


def _qp_code(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    return b"" if code is None else _HEX[code.upper()]


def decode_qp(body: bytes | bytearray | memoryview) -> bytes:
    """Quoted-printable decoded as RFC 2045 6.7 says, which Python's quopri does not
    fully do: whitespace at the end of a line is transport padding and goes (rule 3),
    also before a soft line break (`=` then spaces); `=` at the end of a line is a soft
    break (rule 5); `=XX` is the octet, lower-case hex accepted (the robustness note);
    any other `=` stays as it is. One pass each, no per-line loop; never raises."""
    text = _QP_PADDING.sub(b"", bytes(body))
    return _QP_CODE.sub(_qp_code, text)


IDENTITY_ENCODINGS = ("7bit", "8bit", "binary")


def decode_transfer(encoding: str, body: bytes) -> bytes | None:
    """`body` without its Content-Transfer-Encoding (RFC 2045 6); None for an encoding
    this server does not know (IMAP BINARY answers NO [UNKNOWN-CTE], RFC 3516 4.3)."""
    if encoding == "base64":
        return _b64_decode_lenient(body)
    if encoding == "quoted-printable":
        return decode_qp(body)
    if encoding in IDENTITY_ENCODINGS:
        return body
    return None


def decode_body(header_block: bytes, body: bytes) -> bytes:
    """The payload of a leaf part after its Content-Transfer-Encoding."""
    cte = parse_headers(header_block).transfer_encoding()
    if cte == "base64":
        return _b64_decode_lenient(body)
    if cte == "quoted-printable":
        return decode_qp(body)
    return body


def decode_body_into(header_block: bytes, body: bytes | bytearray | memoryview,
                     reserve: int = 0) -> tuple[bytearray, int, int]:
    """decode_body into one buffer after `reserve` free octets: (buffer, start, end)."""
    cte = parse_headers(header_block).transfer_encoding()
    if cte == "base64":
        return b64_decode_into(body, reserve)
    data = decode_body(header_block, bytes(body))
    out = bytearray(reserve + len(data))
    out[reserve:] = data
    return out, reserve, len(out)


def binary_payload(top: tree.Entity, part: tuple[int, ...]) -> bytes | None:
    """BINARY[part] (RFC 3516 4.2): the part's content with its transfer encoding
    undone. The whole message (no part number), a multipart and a message/rfc822 part
    are given as stored: a composite entity has no encoding of its own (RFC 2045 6.4).
    None: no such part. Raises UnknownEncoding for an encoding we do not know."""
    if not part:
        return top.raw
    entity = tree.find_part(top, part)
    if entity is None:
        return None
    if entity.is_multipart or entity.is_message:
        return entity.body
    encoding = entity.headers.transfer_encoding()
    decoded = decode_transfer(encoding, entity.body)
    if decoded is None:
        raise UnknownEncoding(encoding)
    return decoded


class UnknownEncoding(ValueError):
    """A Content-Transfer-Encoding this server cannot undo."""


def encode_binary_parts(raw: bytes) -> bytes:
    """A message that came as binary (IMAP APPEND with a literal8, RFC 3516 4.4) made
    safe for the 7bit/8bit world: each leaf part declared `binary`, or holding a NUL, is
    re-encoded in base64 and its Content-Transfer-Encoding field says so. Nothing else
    changes, octet for octet, so BINARY[part] gives the client back what it sent."""
    top = tree.parse(raw)
    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement), in order
    for entity in top.walk():
        if entity.children or entity.is_multipart:
            continue
        body = entity.body
        if entity.headers.transfer_encoding() != "binary" and b"\0" not in body:
            continue
        block = entity.header
        parsed = hdr.parse(block)
        field = next((f for f in parsed.fields if f.key == "content-transfer-encoding"), None)
        new_field = b"Content-Transfer-Encoding: base64\r\n"
        if not parsed.fields:
            header = new_field + b"\r\n"
        elif field is None:
            end_of_fields = len(block) - (2 if block.endswith(b"\r\n\r\n") else 0)
            header = block[:end_of_fields] + new_field + block[end_of_fields:]
        else:
            header = block[:field.start] + new_field + block[field.end:]
        if not header.endswith(b"\r\n\r\n"):
            header = header.rstrip(b"\r\n") + b"\r\n\r\n"
        encoded = b64_lines(body).removesuffix(b"\r\n")
        edits.append((entity.start, entity.end, header + encoded))
    if not edits:
        return raw
    out, at = bytearray(), 0
    for start, end, replacement in edits:
        out += raw[at:start]
        out += replacement
        at = end
    out += raw[at:]
    return bytes(out)
