"""Evaluating SEARCH criteria (RFC 3501 section 6.4.4) over a folder's rows, sans-IO.

Criteria are compiled once into nested closures. Cheap tests (flags, dates, sizes, the
stored From/Subject summary) run on the row; header fields the summary lacks and
BODY/TEXT read the message through `Content`, only for rows the cheap tests kept.
String matching is a case-insensitive substring test (RFC 3501 section 6.4.4) on the
decoded text: RFC 2047 words in headers, transfer encodings and charsets in bodies.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.header import decode_header, make_header
from typing import Any

from mssmail.imap import mimetree
from mssmail.imap.searchkeys import And, Key, Node, Not, Or
from mssmail.imap.seqset import contains

# Rows come from MessageOps.search_rows with these columns after the UID.
COLUMNS = ("flags", "size", "internal_date", "date_header", "from_addr", "to_addrs", "subject",
           "modseq", "blob_sha256")
UID, FLAGS, SIZE, INTERNAL, SENT, FROM, TO, SUBJECT, MODSEQ, SHA = range(10)
SUMMARY_MAX = 4000  # Summary fields are cut there (mssmail/store/summary.py)
_ENCODED = re.compile(rb"content-transfer-encoding:\s*(base64|quoted-printable)|=\?[^?]+\?[bq]\?", re.I)
_CHARSET = re.compile(rb'charset="?([a-z0-9_.:-]+)', re.I)


def fold(text: str) -> str:
    return text.casefold()


def decode_words(value: str) -> str:
    """An unfolded header value with RFC 2047 encoded words decoded."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value)
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


class Content:
    """The message of one row, read on first use."""

    __slots__ = ("_loader", "_raw", "_tree", "sha")

    def __init__(self, sha: str, loader: Callable[[str], bytes]) -> None:
        self.sha = sha
        self._loader = loader
        self._raw: bytes | None = None
        self._tree: mimetree.Entity | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._loader(self.sha)
        return self._raw

    @property
    def tree(self) -> mimetree.Entity:
        if self._tree is None:
            self._tree = mimetree.parse(self.raw)
        return self._tree

    def header_values(self, name: str) -> list[str]:
        values = self.tree.headers.get_all(name) or []
        return [decode_words(str(v)) for v in values]

    def contains_text(self, needle: str, body_only: bool) -> bool:
        """Whether the (decoded) text or body contains `needle`, case-insensitively."""
        tree = self.tree
        target = tree.body if body_only else tree.raw
        lowered = target.lower()
        try:
            encoded = needle.encode("ascii").lower()
        except UnicodeEncodeError:
            encoded = needle.encode("utf-8").lower()
        if encoded in lowered:
            return True
        if needle.isascii() and not _ENCODED.search(lowered) and not _non_utf8_charset(lowered):
            return False
        wanted = fold(needle)
        return any(wanted in fold(text) for text in _texts(tree, not body_only))


def _non_utf8_charset(lowered: bytes) -> bool:
    return any(c not in (b"utf-8", b"us-ascii", b"utf8") for c in _CHARSET.findall(lowered))


def _texts(entity: mimetree.Entity, with_headers: bool) -> list[str]:
    """Decoded text of the headers (if asked) and of every text/* part."""
    out: list[str] = []
    if with_headers:
        out.append(decode_words(entity.header.decode("utf-8", "replace")))
    if entity.children:
        for child in entity.children:
            out += _texts(child, with_headers and entity.is_message)
        return out
    if entity.content_type.startswith("text/"):
        out.append(_decoded_body(entity))
    return out


def _decoded_body(entity: mimetree.Entity) -> str:
    import base64
    import binascii
    import quopri

    encoding = str(entity.headers.get("content-transfer-encoding", "")).strip().lower()
    body = entity.body
    if encoding == "base64":
        with contextlib.suppress(binascii.Error, ValueError):
            body = base64.b64decode(body, validate=False)
    elif encoding == "quoted-printable":
        body = quopri.decodestring(body)
    charset = entity.headers.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


@dataclass
class Context:
    """What evaluation needs besides the row."""

    seq_of: Callable[[int], int | None]
    exists: int
    max_uid: int
    loader: Callable[[str], bytes]
    now: datetime


Test = Callable[[tuple[Any, ...], "Content"], bool]


def _day(value: datetime | None) -> date | None:
    return value.astimezone(UTC).date() if value is not None else None


def _header_test(field: str, needle: str) -> Test:
    wanted = fold(needle)
    if field in ("from", "subject") and wanted:
        column = FROM if field == "from" else SUBJECT

        def summary(row: tuple[Any, ...], content: Content) -> bool:
            value = row[column] or ""
            if wanted in fold(value):
                return True
            if len(value) < SUMMARY_MAX:
                return False  # the summary holds the whole decoded field
            return any(wanted in fold(v) for v in content.header_values(field))

        return summary
    if field in ("to", "cc") and wanted:
        def prefiltered(row: tuple[Any, ...], content: Content) -> bool:
            value = row[TO] or ""
            if len(value) < SUMMARY_MAX and wanted not in fold(value):
                return False  # To and Cc are both in the summary: a cheap "no"
            return any(wanted in fold(v) for v in content.header_values(field))

        return prefiltered

    def header(row: tuple[Any, ...], content: Content) -> bool:
        values = content.header_values(field)
        return bool(values) and (not wanted or any(wanted in fold(v) for v in values))

    return header


def compile_node(node: Node, ctx: Context) -> Test:
    """A predicate over (row, content) for `node`."""
    if isinstance(node, And):
        # Cheap tests first: whatever reads the message goes last.
        parts = sorted(node.keys, key=_cost)
        tests = [compile_node(k, ctx) for k in parts]
        return lambda row, content: all(t(row, content) for t in tests)
    if isinstance(node, Or):
        left, right = compile_node(node.left, ctx), compile_node(node.right, ctx)
        return lambda row, content: left(row, content) or right(row, content)
    if isinstance(node, Not):
        inner = compile_node(node.key, ctx)
        return lambda row, content: not inner(row, content)
    return _leaf(node, ctx)


def _cost(node: Node) -> int:
    if isinstance(node, Key):
        if node.kind in ("body", "text"):
            return 3
        if node.kind == "header" and node.field not in ("from", "subject"):
            return 2
        return 0
    if isinstance(node, And):
        return max((_cost(k) for k in node.keys), default=0)
    if isinstance(node, Or):
        return max(_cost(node.left), _cost(node.right))
    return _cost(node.key)


def _leaf(key: Key, ctx: Context) -> Test:
    kind = key.kind
    if kind == "all":
        return lambda row, content: True
    if kind == "none":
        return lambda row, content: False
    if kind in ("flag", "keyword", "noflag", "nokeyword"):
        flag = key.value.lower()
        present = kind in ("flag", "keyword")
        return lambda row, content: (flag in row[FLAGS].lower().split()) == present
    if kind == "header":
        return _header_test(key.field, key.value)
    if kind in ("body", "text"):
        needle, body_only = key.value, kind == "body"
        return lambda row, content: content.contains_text(needle, body_only)
    if kind == "size":
        limit, larger = key.value, key.op == ">"
        return lambda row, content: row[SIZE] > limit if larger else row[SIZE] < limit
    if kind == "date":
        day: date = key.value
        column = INTERNAL if key.field == "internal" else SENT
        op = key.op

        def on_date(row: tuple[Any, ...], content: Content) -> bool:
            # SENT* without a usable Date: header falls back to the internal date.
            value = _day(row[column]) or _day(row[INTERNAL])
            if value is None:
                return False
            return value < day if op == "<" else value == day if op == "=" else value >= day

        return on_date
    if kind == "age":
        limit = ctx.now - timedelta(seconds=key.value)
        younger = key.op == "<="
        return lambda row, content: (row[INTERNAL] >= limit) == younger
    if kind == "seq":
        ranges = key.value.resolve(ctx.exists)
        return lambda row, content: contains(ranges, ctx.seq_of(row[UID]) or 0)
    if kind == "uid":
        ranges = key.value.resolve(ctx.max_uid)
        return lambda row, content: contains(ranges, row[UID])
    if kind == "modseq":
        threshold = key.value
        return lambda row, content: row[MODSEQ] >= threshold
    raise ValueError(f"unknown search key {kind}")


def run(node: Node, rows: list[tuple[Any, ...]], ctx: Context) -> tuple[list[int], int]:
    """UIDs of the matching rows (ascending) and how many messages were read."""
    test = compile_node(node, ctx)
    matched: list[int] = []
    read = 0
    for row in rows:
        content = Content(row[SHA], ctx.loader)
        if test(row, content):
            matched.append(row[UID])
        if content._raw is not None:
            read += 1
    return matched, read


def ascii_prefilter(node: Node) -> dict[str, str]:
    """Column substrings every match must contain (for a SQL pre-filter): the FROM and
    SUBJECT keys ANDed at the top, when their text is ASCII."""
    keys = node.keys if isinstance(node, And) else (node,)
    out: dict[str, str] = {}
    for key in keys:
        if isinstance(key, Key) and key.kind == "header" and key.field in ("from", "subject") \
                and key.value and key.value.isascii():
            out["from_addr" if key.field == "from" else "subject"] = key.value
    return out
