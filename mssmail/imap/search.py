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
        """Whether the (decoded) text or body contains `needle`, case-insensitively.

        The answer is that of `contains_text_decoded`; `_quick_verdict` gives it without
        parsing or decoding when the raw bytes show that decoding cannot reveal the needle.
        """
        raw = self.raw
        header_end = mimetree.header_length(raw)
        lowered = raw.lower()
        try:
            encoded = needle.encode("ascii").lower()
        except UnicodeEncodeError:
            encoded = needle.encode("utf-8").lower()
        if lowered.find(encoded, header_end if body_only else 0) >= 0:
            return True
        if _PLAIN_NEEDLE.fullmatch(needle):
            verdict = _quick_verdict(raw, lowered, header_end, encoded, body_only)
            if verdict is not None:
                return verdict
        wanted = fold(needle)
        return any(wanted in fold(text) for text in _texts(self.tree, not body_only))

    def contains_text_decoded(self, needle: str, body_only: bool) -> bool:
        """The definition: the raw text or body contains `needle` (ASCII case-insensitively),
        or the decoded text does (casefolded). Kept for tests of `contains_text`."""
        tree = self.tree
        target = tree.body if body_only else tree.raw
        try:
            encoded = needle.encode("ascii").lower()
        except UnicodeEncodeError:
            encoded = needle.encode("utf-8").lower()
        if encoded in target.lower():
            return True
        wanted = fold(needle)
        return any(wanted in fold(text) for text in _texts(tree, not body_only))


# An ASCII needle without white space: only those get `_quick_verdict`. (Unfolding a
# header joins lines around a space or tab, so a needle with white space could match
# across a fold that the raw bytes still hold.)
_PLAIN_NEEDLE = re.compile(r"[!-~]+")
# Characters whose casefold has ASCII letters (e.g. "\u017f" -> "s", "\ufb01" -> "fi"): in
# decoded text they could complete an ASCII needle that the raw bytes do not hold.
# tests/unit/imap/test_search_prefilter.py checks the list against all of Unicode.
CASEFOLD_TO_ASCII = ("\u00df\u0130\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e\u212a"
                     "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06")
# Their UTF-8 forms, each after a byte that French or German text rarely has: a one-byte
# `in` is a memchr, a longer needle a much slower scan.
_CASEFOLD_PROBES = tuple(
    (probe, tuple(seq for seq in (c.encode("utf-8") for c in CASEFOLD_TO_ASCII) if probe in seq))
    for probe in (b"\x9f", b"\xc4", b"\xc5", b"\xc7", b"\xe1", b"\xe2", b"\xef"))
# A charset parameter that decodes ASCII bytes to themselves and nothing else to ASCII.
_SAFE_CHARSET = re.compile(rb'charset\s*=\s*"?(?:utf-?8|us-ascii|ascii)(?=["\s;]|$)')


def _may_casefold_to_ascii(raw: bytes) -> bool:
    """Whether `raw` holds the UTF-8 form of a character of CASEFOLD_TO_ASCII."""
    return any(probe in raw and any(seq in raw for seq in seqs) for probe, seqs in _CASEFOLD_PROBES)


def _quick_verdict(raw: bytes, lowered: bytes, header_end: int, needle: bytes,
                   body_only: bool) -> bool | None:
    """The answer of the full search for a needle of `_PLAIN_NEEDLE` that the raw bytes
    (`lowered`) do not contain, when the bytes show that decoding cannot reveal it;
    None when the message must be decoded.

    Decoded text differs from the raw bytes only through RFC 2047 words (`=?`), transfer
    encodings (base64, quoted-printable), charsets other than UTF-8/ASCII, and non-ASCII
    characters that casefold to ASCII; UTF-8 or ASCII decoding keeps every run of ASCII
    bytes as it is, and an ASCII needle can only match inside such a run. So a message
    whose bodies have none of these cannot match there; its header, when it has encoded
    words, is decoded alone (as `_texts` does) instead of the whole message.
    """
    if lowered.find(b"=?", header_end) >= 0 or b"base64" in lowered or b"quoted-printable" in lowered:
        return None
    if b"charset" in lowered and lowered.count(b"charset") != len(_SAFE_CHARSET.findall(lowered)):
        return None
    if not raw.isascii() and _may_casefold_to_ascii(raw):
        return None
    if body_only or b"=?" not in lowered[:header_end]:
        return False
    wanted = needle.decode("ascii")
    return wanted in fold(decode_words(raw[:header_end].decode("utf-8", "replace")))


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


def columns_for(node: Node, *, modseq: bool = False) -> list[str]:
    """The COLUMNS that evaluating `node` reads (the others may come back as None): a
    SUBJECT search over 100,000 rows need not load their dates, flags and addresses."""
    needed: set[int] = set()
    _columns(node, needed)
    if modseq:
        needed.add(MODSEQ)
    return [name for index, name in enumerate(COLUMNS, 1) if index in needed]


def _columns(node: Node, needed: set[int]) -> None:
    if isinstance(node, And):
        for key in node.keys:
            _columns(key, needed)
        return
    if isinstance(node, Or):
        _columns(node.left, needed)
        _columns(node.right, needed)
        return
    if isinstance(node, Not):
        _columns(node.key, needed)
        return
    kind = node.kind
    if kind in ("flag", "keyword", "noflag", "nokeyword"):
        needed.add(FLAGS)
    elif kind == "size":
        needed.add(SIZE)
    elif kind == "date":
        needed.update((INTERNAL, SENT) if node.field != "internal" else (INTERNAL,))
    elif kind == "age":
        needed.add(INTERNAL)
    elif kind == "modseq":
        needed.add(MODSEQ)
    elif kind in ("body", "text"):
        needed.add(SHA)
    elif kind == "header":
        needed.add(SHA)  # any header may need the message (a summary cut at SUMMARY_MAX)
        if node.field in ("from", "subject"):
            needed.add(FROM if node.field == "from" else SUBJECT)
        elif node.field in ("to", "cc"):
            needed.add(TO)


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
