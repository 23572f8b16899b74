"""A cursor over one command in wire form: the lexical rules of RFC 3501 section 9.

Pure functions over bytes, used by `grammar` (commands) and `searchkeys` (SEARCH).
Every failure is a `ParseError`, answered `BAD` (or `NO` when the RFC says so).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

from mssmail.imap import seqset
from mssmail.imap.seqset import SeqSet, SeqSetError

# RFC 3501 section 9: ATOM-CHAR is any CHAR except atom-specials.
_ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0x00, 0x20)) | {0x7F}
ATOM_CHARS = bytes(c for c in range(0x01, 0x80) if c not in _ATOM_SPECIALS)
_ATOM = re.compile(b"[" + re.escape(ATOM_CHARS) + b"]+")
# ASTRING-CHAR = ATOM-CHAR / resp-specials ("]")
_ASTRING_ATOM = re.compile(b"[" + re.escape(ATOM_CHARS + b"]") + b"]+")
# list-char = ATOM-CHAR / list-wildcards / resp-specials
_LIST_ATOM = re.compile(b"[" + re.escape(ATOM_CHARS + b"%*]") + b"]+")
_LITERAL = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r\n")
_NUMBER = re.compile(rb"\d{1,20}")
_SEQSET = re.compile(rb"[0-9*:,$]+")
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(rb"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
MAX_NUMBER = 2**63 - 1  # mod-sequences are 63-bit (RFC 7162); message numbers are checked apart

SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}


class ParseError(ValueError):
    """A syntax error (BAD), or with `status="NO"` a valid but refused request."""

    def __init__(self, message: str, *, code: str = "", status: str = "BAD") -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Cursor:
    """Reads tokens from `raw`, left to right."""

    __slots__ = ("pos", "raw")

    def __init__(self, raw: bytes, pos: int = 0) -> None:
        self.raw = raw
        self.pos = pos

    # --- basics -------------------------------------------------------------------
    def at_end(self) -> bool:
        return self.pos >= len(self.raw)

    def peek(self, n: int = 1) -> bytes:
        return self.raw[self.pos:self.pos + n]

    def rest(self) -> bytes:
        return self.raw[self.pos:]

    def error(self, what: str) -> ParseError:
        near = self.raw[self.pos:self.pos + 20].decode("ascii", "replace")
        return ParseError(f"{what} (near {near!r})" if near else f"{what} (at end of command)")

    def expect(self, token: bytes) -> None:
        if self.raw[self.pos:self.pos + len(token)] != token:
            raise self.error(f"expected {token.decode()!r}")
        self.pos += len(token)

    def sp(self) -> None:
        if self.peek() != b" ":
            raise self.error("expected a space")
        self.pos += 1

    def maybe(self, token: bytes) -> bool:
        if self.raw[self.pos:self.pos + len(token)] == token:
            self.pos += len(token)
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected characters")

    def keyword(self, word: bytes) -> bool:
        """Consume `word` (case-insensitive) if it is the next whole atom."""
        end = self.pos + len(word)
        if self.raw[self.pos:end].upper() != word:
            return False
        nxt = self.raw[end:end + 1]
        if nxt and nxt not in b" ()[]":
            return False
        self.pos = end
        return True

    # --- tokens -------------------------------------------------------------------
    def atom(self) -> bytes:
        match = _ATOM.match(self.raw, self.pos)
        if not match:
            raise self.error("expected an atom")
        self.pos = match.end()
        return match.group(0)

    def number(self, limit: int = MAX_NUMBER) -> int:
        match = _NUMBER.match(self.raw, self.pos)
        if not match:
            raise self.error("expected a number")
        value = int(match.group(0))
        if value > limit:
            raise self.error("number out of range")
        self.pos = match.end()
        return value

    def nz_number(self, limit: int = seqset.MAX_NUMBER) -> int:
        value = self.number(limit)
        if value == 0:
            raise self.error("expected a non-zero number")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        raw, i = self.raw, self.pos
        while True:
            if i >= len(raw):
                raise ParseError("unterminated quoted string")
            c = raw[i]
            if c == 0x22:  # "
                break
            if c == 0x5C:  # backslash: only quoted-specials may be escaped
                if i + 1 >= len(raw) or raw[i + 1] not in (0x22, 0x5C):
                    raise ParseError("invalid escape in quoted string")
                out.append(raw[i + 1])
                i += 2
                continue
            if c in (0x0D, 0x0A, 0x00):
                raise ParseError("CR, LF or NUL in quoted string")
            out.append(c)
            i += 1
        self.pos = i + 1
        return bytes(out)

    def literal(self, *, binary: bool = False) -> bytes:
        match = _LITERAL.match(self.raw, self.pos)
        if not match:
            raise self.error("expected a literal")
        if match.group(1) and not binary:
            raise self.error("literal8 not allowed here")
        size = int(match.group(2))
        start = match.end()
        if start + size > len(self.raw):
            raise ParseError("literal shorter than announced")
        self.pos = start + size
        return self.raw[start:self.pos]

    def string(self) -> bytes:
        first = self.peek()
        if first == b'"':
            return self.quoted()
        if first in (b"{", b"~"):
            return self.literal()
        raise self.error("expected a string")

    def astring(self) -> bytes:
        first = self.peek()
        if first in (b'"', b"{"):
            return self.string()
        match = _ASTRING_ATOM.match(self.raw, self.pos)
        if not match:
            raise self.error("expected an atom or a string")
        self.pos = match.end()
        return match.group(0)

    def nstring(self) -> bytes | None:
        if self.keyword(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        first = self.peek()
        if first in (b'"', b"{"):
            return self.string()
        match = _LIST_ATOM.match(self.raw, self.pos)
        if not match:
            raise self.error("expected a mailbox pattern")
        self.pos = match.end()
        return match.group(0)

    def seqset(self) -> SeqSet:
        match = _SEQSET.match(self.raw, self.pos)
        if not match:
            raise self.error("expected a sequence set")
        try:
            value = seqset.parse(match.group(0))
        except SeqSetError as exc:
            raise ParseError(str(exc)) from None
        self.pos = match.end()
        return value

    def flag(self, *, allow_recent: bool = False) -> str:
        """flag = "\\Answered" / ... / flag-keyword / flag-extension (RFC 3501 section 9)."""
        if self.maybe(b"\\"):
            if self.maybe(b"*"):
                return "\\*"
            name = "\\" + self.atom().decode("ascii")
            lowered = name.lower()
            if lowered == "\\recent" and not allow_recent:
                raise ParseError("\\Recent cannot be set by a client")
            return SYSTEM_FLAGS.get(lowered, "\\Recent" if lowered == "\\recent" else name)
        return self.atom().decode("ascii")

    def flag_list(self) -> list[str]:
        """"(" [flag *(SP flag)] ")" """
        self.expect(b"(")
        flags: list[str] = []
        if self.maybe(b")"):
            return flags
        while True:
            flags.append(self.flag())
            if self.maybe(b")"):
                return flags
            self.sp()

    def paren_atoms(self) -> list[str]:
        """"(" [atom *(SP atom)] ")", upper-cased (option and attribute lists)."""
        self.expect(b"(")
        items: list[str] = []
        if self.maybe(b")"):
            return items
        while True:
            items.append(self.atom().decode("ascii").upper())
            if self.maybe(b")"):
                return items
            self.sp()

    def date(self) -> date:
        """date = date-text / DQUOTE date-text DQUOTE (e.g. 1-Feb-1994)."""
        quoted = self.maybe(b'"')
        match = _DATE.match(self.raw, self.pos)
        if not match:
            raise self.error("expected a date like 1-Feb-1994")
        self.pos = match.end()
        if quoted:
            self.expect(b'"')
        day, month, year = match.groups()
        try:
            return date(int(year), MONTHS.index(month.decode().upper()) + 1, int(day))
        except ValueError:
            raise ParseError("invalid date") from None

    def date_time(self) -> datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE"""
        self.expect(b'"')
        match = _DATE_TIME.match(self.raw, self.pos)
        if not match:
            raise self.error('expected a date-time like "17-Jul-1996 02:44:25 -0700"')
        self.pos = match.end()
        self.expect(b'"')
        day, month, year, hh, mm, ss, sign, zh, zm = match.groups()
        try:
            offset = timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
            moment = datetime(int(year), MONTHS.index(month.decode().upper()) + 1, int(day),
                              int(hh), int(mm), int(ss), tzinfo=timezone(offset))
        except ValueError:
            raise ParseError("invalid date-time") from None
        return moment.astimezone(UTC)


def format_date_time(moment: datetime) -> str:
    """INTERNALDATE text (RFC 3501 section 9 `date-time`), in UTC."""
    moment = moment.astimezone(UTC)
    return f"{moment.day:2d}-{MONTHS[moment.month - 1].title()}-{moment.year:04d} " \
           f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} +0000"
