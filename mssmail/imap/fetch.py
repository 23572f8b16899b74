"""FETCH responses (RFC 3501 section 7.4.2), sans-IO: one message in, one response out.

ENVELOPE, BODY, BODYSTRUCTURE and RFC822.SIZE come from the message's bytes as the
reader sees them. They are worked out once and kept in Message.extra["imap"] (see
`cache_entry`), so listing a folder does not read every message again. Encrypted
messages are the exception: what a reader sees of them depends on the keys the server
holds at that moment (crypto's view filter), so they are always worked out afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mssmail.imap import mimetree, render, structure
from mssmail.imap.grammar import FetchItem, Section
from mssmail.imap.tokens import format_date_time
from mssmail.store.messages import MessageMeta

CACHE_VERSION = 1
CACHED_ITEMS = {"ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE"}
ENCRYPTED_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime", "multipart/encrypted")
_HEADER = Section(text="HEADER")
_TEXT = Section(text="TEXT")


def _text(value: bytes) -> str:
    return value.decode("latin-1")  # JSON-safe and reversible for any octets


def cache_entry(raw: bytes) -> dict[str, Any]:
    """What FETCH needs from a message without reading it again."""
    tree = mimetree.parse(raw)
    if tree.content_type in ENCRYPTED_TYPES:
        return {"v": CACHE_VERSION, "enc": True}
    return {"v": CACHE_VERSION, "size": len(raw), "env": _text(structure.encode_envelope(tree)),
            "bs": _text(structure.encode_structure(tree, True)),
            "body": _text(structure.encode_structure(tree, False))}


def cached(meta: MessageMeta) -> dict[str, Any] | None:
    entry = meta.extra.get("imap") if meta.extra else None
    if isinstance(entry, dict) and entry.get("v") == CACHE_VERSION and not entry.get("enc"):
        return entry
    return None


def needs_bytes(items: Sequence[FetchItem], meta: MessageMeta) -> bool:
    """Whether rendering `items` for `meta` needs the message's bytes."""
    if any(item.reads_content for item in items):
        return True
    return any(item.name in CACHED_ITEMS for item in items) and cached(meta) is None


@dataclass
class Rendered:
    line: bytes  # the whole `* n FETCH (...)` response with CRLF
    cache: dict[str, Any] | None = None  # a fresh cache entry to keep, if any


def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    origin, count = partial
    return data[origin:origin + count]


def render_fetch(seq: int, meta: MessageMeta, items: Sequence[FetchItem], raw: bytes | None, *,
                 uid_command: bool, flags_changed: bool = False, with_modseq: bool = False) -> Rendered:
    """`* seq FETCH (...)` for one message. `raw` is the reader's view, when needed."""
    entry = cached(meta)
    fresh = None
    if entry is None and raw is not None and any(i.name in CACHED_ITEMS for i in items):
        fresh = cache_entry(raw)
        if not fresh.get("enc"):
            entry = fresh
    tree: mimetree.Entity | None = None

    def get_tree() -> mimetree.Entity:
        nonlocal tree
        if tree is None:
            if raw is None:
                raise ValueError("message bytes needed")
            tree = mimetree.parse(raw)
        return tree

    parts: list[bytes] = []
    names = {item.name for item in items}
    if uid_command and "UID" not in names:
        parts.append(b"UID %d" % meta.uid)
    if flags_changed and "FLAGS" not in names:
        parts.append(b"FLAGS " + render.flag_list(meta.flags.split()))
    if with_modseq and "MODSEQ" not in names:
        parts.append(b"MODSEQ (%d)" % meta.modseq)
    for item in items:
        name = item.name
        if name == "UID":
            parts.append(b"UID %d" % meta.uid)
        elif name == "FLAGS":
            parts.append(b"FLAGS " + render.flag_list(meta.flags.split()))
        elif name == "INTERNALDATE":
            parts.append(b'INTERNALDATE "' + format_date_time(meta.internal_date).encode() + b'"')
        elif name == "MODSEQ":
            parts.append(b"MODSEQ (%d)" % meta.modseq)
        elif name == "RFC822.SIZE":
            size = entry["size"] if entry else len(raw) if raw is not None else meta.size
            parts.append(b"RFC822.SIZE %d" % size)
        elif name == "ENVELOPE":
            value = entry["env"].encode("latin-1") if entry else structure.encode_envelope(get_tree())
            parts.append(b"ENVELOPE " + value)
        elif name == "BODYSTRUCTURE":
            value = entry["bs"].encode("latin-1") if entry else structure.encode_structure(get_tree(), True)
            parts.append(b"BODYSTRUCTURE " + value)
        elif name == "BODY":
            value = entry["body"].encode("latin-1") if entry else structure.encode_structure(get_tree(), False)
            parts.append(b"BODY " + value)
        elif name == "RFC822":
            parts.append(b"RFC822 " + _literal(raw or b""))
        elif name == "RFC822.HEADER":
            parts.append(b"RFC822.HEADER " + _literal(mimetree.section_bytes(get_tree(), _HEADER) or b""))
        elif name == "RFC822.TEXT":
            parts.append(b"RFC822.TEXT " + _literal(mimetree.section_bytes(get_tree(), _TEXT) or b""))
        elif item.section is not None:
            data = (raw or b"") if not item.section.part and not item.section.text else \
                mimetree.section_bytes(get_tree(), item.section)
            label = item.label().encode("ascii")
            if data is None:
                parts.append(label + b" NIL")
            else:
                parts.append(label + b" " + _literal(_partial(data, item.partial)))
    line = b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
    return Rendered(line, fresh)


def _literal(data: bytes) -> bytes:
    """Message text always goes as a literal (RFC 3501 section 4.3): bytes are kept exact."""
    return b"{%d}\r\n" % len(data) + data
