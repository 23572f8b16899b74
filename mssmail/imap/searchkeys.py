"""SEARCH criteria (RFC 3501 section 6.4.4 and `search-key` in section 9) as a tree.

Strings are decoded with the command's CHARSET here, so evaluation (`search.py`) only
sees text. Also: MODSEQ (RFC 7162 section 3.1.5), YOUNGER/OLDER (RFC 5032).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from datetime import date
from typing import Any

from mssmail.imap.tokens import Cursor, ParseError

MAX_DEPTH = 64  # nesting of parentheses, NOT and OR
MAX_KEYS = 1000

# Keys without argument -> (kind, value).
_FLAG_KEYS = {
    b"ANSWERED": ("flag", "\\Answered"), b"DELETED": ("flag", "\\Deleted"),
    b"DRAFT": ("flag", "\\Draft"), b"FLAGGED": ("flag", "\\Flagged"), b"SEEN": ("flag", "\\Seen"),
    b"UNANSWERED": ("noflag", "\\Answered"), b"UNDELETED": ("noflag", "\\Deleted"),
    b"UNDRAFT": ("noflag", "\\Draft"), b"UNFLAGGED": ("noflag", "\\Flagged"),
    b"UNSEEN": ("noflag", "\\Seen"),
    # \Recent is the session's (RFC 3501 2.3.2): NEW is RECENT UNSEEN, OLD is NOT RECENT.
    b"NEW": ("new", None), b"RECENT": ("recent", None), b"OLD": ("old", None), b"ALL": ("all", None),
}
_STRING_KEYS = {b"BCC": "bcc", b"BODY": "body", b"CC": "cc", b"FROM": "from", b"SUBJECT": "subject",
                b"TEXT": "text", b"TO": "to"}
_DATE_KEYS = {b"BEFORE": ("internal", "<"), b"ON": ("internal", "="), b"SINCE": ("internal", ">="),
              b"SENTBEFORE": ("sent", "<"), b"SENTON": ("sent", "="), b"SENTSINCE": ("sent", ">=")}
SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")


@dataclass(frozen=True)
class Key:
    """A leaf: kind is one of all, none, flag, noflag, keyword, nokeyword, header, body,
    text, date, size, seq, uid, modseq, age, recent, new, old."""

    kind: str
    value: Any = None
    field: str = ""  # header name, date source ("internal"/"sent"), comparison...
    op: str = ""


@dataclass(frozen=True)
class And:
    keys: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    key: Node


Node = Key | And | Or | Not


def check_charset(name: str) -> str:
    """A Python codec for CHARSET, or NO [BADCHARSET] (RFC 3501 section 6.4.4)."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ParseError(f"unsupported charset {name}",
                         code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")", status="NO") from None


class _KeyParser:
    def __init__(self, cur: Cursor, charset: str) -> None:
        self.cur = cur
        self.charset = charset
        self.count = 0

    def text(self) -> str:
        raw = self.cur.astring()
        try:
            return raw.decode(self.charset)
        except UnicodeDecodeError:
            raise ParseError(f"search string is not valid {self.charset}") from None

    def keys(self, depth: int) -> list[Node]:
        """search-key *(SP search-key), until ")" or the end."""
        out = [self.key(depth)]
        while self.cur.peek() == b" ":
            self.cur.sp()
            out.append(self.key(depth))
        return out

    def key(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ParseError("search criteria nested too deeply")
        self.count += 1
        if self.count > MAX_KEYS:
            raise ParseError("too many search criteria")
        cur = self.cur
        if cur.maybe(b"("):
            inner = self.keys(depth + 1)
            cur.expect(b")")
            return inner[0] if len(inner) == 1 else And(tuple(inner))
        first = cur.peek()
        if first.isdigit() or first in (b"*", b"$"):  # `$`: RFC 5182 3
            return Key("seq", cur.seqset())
        word = cur.atom().upper()
        if word in _FLAG_KEYS:
            kind, value = _FLAG_KEYS[word]
            return Key(kind, value)
        if word in _STRING_KEYS:
            cur.sp()
            return self.string_key(_STRING_KEYS[word], self.text())
        if word in _DATE_KEYS:
            cur.sp()
            source, op = _DATE_KEYS[word]
            return Key("date", cur.date(), field=source, op=op)
        if word in (b"KEYWORD", b"UNKEYWORD"):
            cur.sp()
            flag = cur.flag()
            return Key("keyword" if word == b"KEYWORD" else "nokeyword", flag)
        if word == b"HEADER":
            cur.sp()
            name = cur.astring().decode("ascii", "replace")
            cur.sp()
            return Key("header", self.text(), field=name.lower())
        if word in (b"LARGER", b"SMALLER"):
            cur.sp()
            return Key("size", cur.number(), op=">" if word == b"LARGER" else "<")
        if word == b"UID":
            cur.sp()
            return Key("uid", cur.seqset())
        if word == b"NOT":
            cur.sp()
            return Not(self.key(depth + 1))
        if word == b"OR":
            cur.sp()
            left = self.key(depth + 1)
            cur.sp()
            return Or(left, self.key(depth + 1))
        if word in (b"YOUNGER", b"OLDER"):  # RFC 5032
            cur.sp()
            return Key("age", cur.nz_number(), op="<=" if word == b"YOUNGER" else ">")
        if word == b"MODSEQ":  # RFC 7162 section 3.1.5
            cur.sp()
            if cur.peek() == b'"':
                cur.quoted()  # entry-name (per-flag mod-sequences are not kept)
                cur.sp()
                entry = cur.atom().upper()
                if entry not in (b"PRIV", b"SHARED", b"ALL"):
                    raise ParseError("invalid MODSEQ entry type")
                cur.sp()
            return Key("modseq", cur.number())
        raise ParseError(f"unknown search key {word.decode('ascii', 'replace')}")

    @staticmethod
    def string_key(kind: str, value: str) -> Key:
        if kind in ("body", "text"):
            return Key(kind, value)
        return Key("header", value, field=kind)


def parse_criteria(cur: Cursor, charset: str = "us-ascii") -> Node:
    """The search keys up to the end of the command (RFC 3501: implicitly ANDed)."""
    parser = _KeyParser(cur, charset)
    keys = parser.keys(0)
    cur.end()
    return keys[0] if len(keys) == 1 else And(tuple(keys))


def needs_content(node: Node) -> bool:
    """Whether evaluating `node` may read message text (BODY/TEXT)."""
    if isinstance(node, Key):
        return node.kind in ("body", "text")
    if isinstance(node, And):
        return any(needs_content(k) for k in node.keys)
    if isinstance(node, Or):
        return needs_content(node.left) or needs_content(node.right)
    return needs_content(node.key)


def date_value(node: Key) -> date:
    value = node.value
    assert isinstance(value, date)
    return value
