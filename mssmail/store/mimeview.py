"""The one place the store gets a message's MIME tree from.

Everything in the store that looks inside a message (search, the message view, one
part's bytes) goes through `parse_tree`: the offset-keeping tree of the shared MIME
package (`mssmail/mime/tree.py`), the one IMAP and crypto read too.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from mssmail.mime.tree import Entity, find_part, header_length, parse

__all__ = ["Entity", "PartInfo", "find_part", "header_length", "list_parts", "parse_part_id", "parse_tree",
           "structure_defects", "text_defects"]


def parse_tree(raw: bytes) -> Entity:
    """The MIME tree of a message (bounded depth and part count)."""
    return parse(raw)


@dataclass(frozen=True)
class PartInfo:
    """One leaf of a message as a reader lists it: `part_id` is the IMAP part number
    (RFC 3501 section 6.4.5, "1.2"), usable with `MessageAPI.message_part`."""

    part_id: str
    content_type: str
    filename: str
    size: int  # octets as stored (still transfer-encoded)
    disposition: str  # "inline", "attachment" or ""
    content_id: str
    is_attachment: bool


def parse_part_id(part_id: str) -> tuple[int, ...]:
    """"1.2.3" -> (1, 2, 3); ValueError for anything else."""
    numbers = tuple(int(n) for n in part_id.split("."))
    if not numbers or any(n < 1 for n in numbers) or len(numbers) > 40:
        raise ValueError(f"not a part number: {part_id!r}")
    return numbers


def _filename(entity: Entity) -> str:
    """Content-Disposition filename, else Content-Type name (RFC 2231 decoded)."""
    return entity.headers.filename() or ""


def list_parts(top: Entity) -> list[PartInfo]:
    """The leaves of a message, depth first, with their part numbers. A message/rfc822
    part is one leaf (an attachment: a forwarded message), as mail clients show it."""
    out: list[PartInfo] = []

    def visit(entity: Entity, number: str) -> None:
        container = entity
        if entity.is_multipart and entity.children:
            for index, child in enumerate(container.children, 1):
                visit(child, f"{number}.{index}" if number else str(index))
            return
        disposition = str(entity.headers.get("content-disposition", "")).split(";")[0].strip().lower()
        filename = _filename(entity)
        content_type = entity.content_type
        attachment = disposition == "attachment" or bool(filename) or entity.is_message or not (
            content_type.startswith("text/") or disposition == "inline")
        out.append(PartInfo(number or "1", content_type, filename, entity.body_size, disposition,
                            str(entity.headers.get("content-id", "")).strip().strip("<>"), attachment))

    visit(top, "")
    return out


# What a reader is told when part of a message could not be shown (the webmail's "Une
# partie du message n'a pas pu être affichée."): the tree's own structure defects
# (mssmail/mime/tree.py) and, for the text parts shown, what their decoding met.
BAD_BASE64 = "bad base64"
UNKNOWN_CHARSET = "unknown charset"
UNKNOWN_ENCODING = "unknown transfer encoding"
_ENCODINGS = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def structure_defects(top: Entity) -> list[str]:
    """Every structure defect of the tree (no boundary, no delimiter, too deep, too
    many parts), each once, in the order met."""
    found: dict[str, None] = {}
    for entity in top.walk():
        for defect in entity.defects:
            found.setdefault(defect, None)
    return list(found)


def text_defects(entity: Entity) -> list[str]:
    """Why a text part may show wrong: an unknown Content-Transfer-Encoding (RFC 2045
    section 6.1: then the body is shown as is), base64 with characters outside its
    alphabet or a length that is not a multiple of 4 after the line breaks (RFC 2045
    section 6.8: decoders drop those; some of the text is gone), or a charset Python
    does not know (the text is read as UTF-8 instead)."""
    out: list[str] = []
    encoding = entity.headers.transfer_encoding()
    if encoding not in _ENCODINGS:
        out.append(UNKNOWN_ENCODING)
    elif encoding == "base64":
        compact = b"".join(entity.body.split())
        if len(compact) % 4 or _BASE64.fullmatch(compact) is None:
            out.append(BAD_BASE64)
    charset = entity.headers.charset()
    if charset:
        try:
            codecs.lookup(charset)
        except (LookupError, ValueError):
            out.append(UNKNOWN_CHARSET)
    return out
