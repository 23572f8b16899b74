"""FETCH responses (RFC 3501 section 7.4.2), sans-IO: one message in, one response out.

ENVELOPE, BODY, BODYSTRUCTURE and RFC822.SIZE come from the message's bytes as the
reader sees them. They are worked out once and kept, already rendered, in
Message.imap_cache (see `cache_entry`), so listing a folder neither reads every message
again nor decodes anything: the cached octets are copied into the response. Encrypted
messages are the exception: what a reader sees of them depends on the keys the server
holds at that moment (crypto's view filter), so they are always worked out afresh.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from mssmail.imap import render, structure
from mssmail.imap.grammar import FetchItem, Section
from mssmail.imap.tokens import ParseError, format_date_time
from mssmail.mime import transfer
from mssmail.mime import tree as mimetree
from mssmail.store.messages import MessageMeta

CACHE_VERSION = 2  # 1 was a JSON entry in Message.extra["imap"], no longer read
CACHED_ITEMS = {"ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE"}
ENCRYPTED_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime", "multipart/encrypted")
_HEADER = Section(text="HEADER")
_TEXT = Section(text="TEXT")
# version, encrypted, RFC822.SIZE, octets of ENVELOPE, of BODYSTRUCTURE; then ENVELOPE,
# BODYSTRUCTURE and BODY as they go on the wire.
_CACHE_HEAD = struct.Struct("<BBQII")


@dataclass(frozen=True)
class Cached:
    """A message's cache entry, decoded."""

    size: int
    env: bytes
    bs: bytes
    body: bytes


def cache_entry(raw: bytes) -> bytes:
    """What FETCH needs from a message without reading it again (Message.imap_cache)."""
    tree = mimetree.parse(raw)
    if tree.content_type in ENCRYPTED_TYPES:
        return _CACHE_HEAD.pack(CACHE_VERSION, 1, 0, 0, 0)
    env = structure.encode_envelope(tree)
    bs = structure.encode_structure(tree, True)
    body = structure.encode_structure(tree, False)
    return _CACHE_HEAD.pack(CACHE_VERSION, 0, len(raw), len(env), len(bs)) + env + bs + body


def decode_cache(blob: bytes | None) -> Cached | None:
    """The entry kept by `cache_entry`; None if there is none, it is of another version,
    or the message is encrypted (worked out afresh for each reader)."""
    if not blob or len(blob) < _CACHE_HEAD.size:
        return None
    version, encrypted, size, n_env, n_bs = _CACHE_HEAD.unpack_from(blob)
    if version != CACHE_VERSION or encrypted:
        return None
    start = _CACHE_HEAD.size
    return Cached(size, blob[start:start + n_env], blob[start + n_env:start + n_env + n_bs],
                  blob[start + n_env + n_bs:])


def cached(meta: MessageMeta) -> Cached | None:
    return decode_cache(meta.imap_cache)


def needs_bytes(items: Sequence[FetchItem], meta: MessageMeta) -> bool:
    """Whether rendering `items` for `meta` needs the message's bytes."""
    if any(item.reads_content for item in items):
        return True
    return any(item.name in CACHED_ITEMS for item in items) and not cache_usable(meta.imap_cache)


@dataclass
class Rendered:
    line: bytes  # the whole `* n FETCH (...)` response with CRLF
    cache: bytes | None = None  # a fresh cache entry to keep, if any


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
    if entry is None and raw is not None and any(i.name in CACHED_ITEMS for i in items) \
            and meta.imap_cache is None:
        fresh = cache_entry(raw)
        entry = decode_cache(fresh)
    tree: mimetree.Entity | None = None

    def get_tree() -> mimetree.Entity:
        nonlocal tree
        if tree is None:
            if raw is None:
                raise ValueError("message bytes needed")
            tree = mimetree.parse(raw)
        return tree

    parts: list[bytes | tuple[bytes, bytes]] = []  # a tuple: label and literal, not copied
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
            size = entry.size if entry else len(raw) if raw is not None else meta.size
            parts.append(b"RFC822.SIZE %d" % size)
        elif name == "ENVELOPE":
            value = entry.env if entry else structure.encode_envelope(get_tree())
            parts.append(b"ENVELOPE " + value)
        elif name == "BODYSTRUCTURE":
            value = entry.bs if entry else structure.encode_structure(get_tree(), True)
            parts.append(b"BODYSTRUCTURE " + value)
        elif name == "BODY":
            value = entry.body if entry else structure.encode_structure(get_tree(), False)
            parts.append(b"BODY " + value)
        elif name == "RFC822":
            parts.append(_literal(b"RFC822", raw or b""))
        elif name == "RFC822.HEADER":
            parts.append(_literal(b"RFC822.HEADER", mimetree.section_bytes(get_tree(), _HEADER) or b""))
        elif name == "RFC822.TEXT":
            parts.append(_literal(b"RFC822.TEXT", mimetree.section_bytes(get_tree(), _TEXT) or b""))
        elif name in ("BINARY[]", "BINARY.SIZE"):
            parts.append(_binary(item, get_tree()))
        elif item.section is not None:
            data = (raw or b"") if not item.section.part and not item.section.text else \
                mimetree.section_bytes(get_tree(), item.section)
            label = item.label().encode("ascii")
            if data is None:
                parts.append(label + b" NIL")
            else:
                parts.append(_literal(label, _partial(data, item.partial)))
    pieces = [b"* %d FETCH (" % seq]
    for index, part in enumerate(parts):
        if index:
            pieces.append(b" ")
        if isinstance(part, tuple):
            pieces += part
        else:
            pieces.append(part)
    pieces.append(b")\r\n")
    line = b"".join(pieces)  # message text is copied once here
    return Rendered(line, fresh)


_META_ITEMS = {"UID", "FLAGS", "INTERNALDATE", "MODSEQ", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY"}


class MetaRenderer:
    """`render_fetch` for items that need no message bytes (a listing: FLAGS, ENVELOPE,
    RFC822.SIZE...), worked out once per command instead of once per message; same
    output. `usable` is False when the items need bytes; a call returns None for a
    message without a usable cache entry (then `render_fetch` it)."""

    def __init__(self, items: Sequence[FetchItem], *, uid_command: bool, with_modseq: bool) -> None:
        names = [item.name for item in items]
        self.usable = all(item.section is None and item.name in _META_ITEMS for item in items)
        self.uses_cache = any(name in CACHED_ITEMS for name in names)
        steps = []
        if uid_command and "UID" not in names:
            steps.append("UID")
        if with_modseq and "MODSEQ" not in names:
            steps.append("MODSEQ")
        self.steps = steps + names
        self._flags: dict[str, bytes] = {}

    def __call__(self, seq: int, meta: MessageMeta) -> bytes | None:
        entry = decode_cache(meta.imap_cache) if self.uses_cache else None
        if self.uses_cache and entry is None:
            return None
        parts: list[bytes] = []
        for name in self.steps:
            if name == "FLAGS":
                flags = self._flags.get(meta.flags)
                if flags is None:
                    flags = self._flags[meta.flags] = b"FLAGS " + render.flag_list(meta.flags.split())
                parts.append(flags)
            elif name == "ENVELOPE":
                parts.append(b"ENVELOPE " + entry.env)  # type: ignore[union-attr]
            elif name == "RFC822.SIZE":
                parts.append(b"RFC822.SIZE %d" % entry.size)  # type: ignore[union-attr]
            elif name == "UID":
                parts.append(b"UID %d" % meta.uid)
            elif name == "MODSEQ":
                parts.append(b"MODSEQ (%d)" % meta.modseq)
            elif name == "INTERNALDATE":
                parts.append(b'INTERNALDATE "' + format_date_time(meta.internal_date).encode() + b'"')
            elif name == "BODYSTRUCTURE":
                parts.append(b"BODYSTRUCTURE " + entry.bs)  # type: ignore[union-attr]
            else:  # BODY
                parts.append(b"BODY " + entry.body)  # type: ignore[union-attr]
        return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"


def cache_usable(blob: bytes | None) -> bool:
    """Whether `decode_cache(blob)` gives an entry, without decoding it."""
    return blob is not None and len(blob) >= _CACHE_HEAD.size and blob[0] == CACHE_VERSION and not blob[1]


def _binary(item: FetchItem, top: mimetree.Entity) -> bytes | tuple[bytes, bytes]:
    """BINARY[part]<partial> and BINARY.SIZE[part] (RFC 3516 4.2-4.3): the decoded
    content, as a literal8 (`~{n}`) when it holds a NUL (a plain literal may not), else
    a plain literal; the size is that of the whole decoded content. A part whose
    encoding we cannot undo fails the command with NO [UNKNOWN-CTE] (4.3)."""
    assert item.section is not None
    label = item.label().encode("ascii")
    try:
        data = transfer.binary_payload(top, item.section.part)
    except transfer.UnknownEncoding as exc:
        raise ParseError(f"unknown Content-Transfer-Encoding {str(exc)[:40]}",
                         code="UNKNOWN-CTE", status="NO") from None
    if item.name == "BINARY.SIZE":
        return label + b" %d" % (len(data) if data is not None else 0)
    if data is None:
        return label + b" NIL"
    data = _partial(data, item.partial)
    if b"\0" in data:
        return label + b" ~{%d}\r\n" % len(data), data
    return _literal(label, data)


def _literal(label: bytes, data: bytes) -> tuple[bytes, bytes]:
    """`label {n}CRLF` and the data: message text always goes as a literal (RFC 3501
    section 4.3), bytes kept exact."""
    return label + b" {%d}\r\n" % len(data), data
