"""IMAP URLs (RFC 5092) as CATENATE names message parts (RFC 4469 section 5), sans-IO.

CATENATE takes "imapurl" references to messages the user can already read on this
server, in the absolute form (`imap://host/Sent;UIDVALIDITY=5/;UID=3/;SECTION=1`) or
the relative one that starts at the mailbox (`/Sent/;UID=3/;SECTION=HEADER`). What is
read: the mailbox (%-encoded, RFC 5092 section 3: its octets are the IMAP mailbox
name's), an optional UIDVALIDITY, the UID, an optional SECTION (as in BODY[...]) and an
optional PARTIAL (origin.length). Anything else (a search URL, URLAUTH's ;EXPIRE or
;URLAUTH, a message list without a UID) is refused: CATENATE answers NO [BADURL].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from mssmail.imap.grammar import Section, parse_section
from mssmail.imap.tokens import ParseError

_ABSOLUTE = re.compile(r"imap://(?:[^/@]*@)?(?P<host>[^/:]*)(?::\d+)?(?P<path>/.*)\Z", re.I | re.S)
_NUMBER = re.compile(r"[1-9]\d{0,19}\Z")
_PARTIAL = re.compile(r"(\d{1,10})(?:\.([1-9]\d{0,9}))?\Z")


class BadURL(ValueError):
    """Not an IMAP URL naming one message (or part) that CATENATE can read."""


@dataclass(frozen=True)
class MessageURL:
    host: str  # "" for a relative URL
    mailbox: bytes  # the IMAP mailbox name's octets, %-decoded
    uidvalidity: int | None
    uid: int
    section: Section | None
    partial: tuple[int, int | None] | None  # (origin, length or None: to the end)


def parse(url: str) -> MessageURL:
    """Parse an absolute or relative (from `/`) IMAP message URL; BadURL if it is not one."""
    host = ""
    match = _ABSOLUTE.match(url)
    path = url
    if match:
        host, path = match.group("host").lower(), match.group("path")
    if not path.startswith("/") or any(c in path for c in "?#") or any(ord(c) < 0x21 for c in path):
        raise BadURL("not a message URL")
    pieces = path[1:].split("/;")
    mailbox_part, rest = pieces[0], pieces[1:]
    uidvalidity = None
    if ";" in mailbox_part:
        mailbox_part, _, param = mailbox_part.partition(";")
        key, _, value = param.partition("=")
        if key.upper() != "UIDVALIDITY" or not _NUMBER.match(value):
            raise BadURL("bad mailbox parameter")
        uidvalidity = int(value)
    mailbox_part = mailbox_part.rstrip("/") if rest else mailbox_part
    if not mailbox_part:
        raise BadURL("no mailbox")
    fields: dict[str, str] = {}
    for piece in rest:
        key, sep, value = piece.partition("=")
        key = key.upper()
        if not sep or key not in ("UID", "SECTION", "PARTIAL") or key in fields:
            raise BadURL(f"unexpected URL part {key[:20]}")
        fields[key] = value.rstrip("/") if key != "PARTIAL" else value
    if "UID" not in fields or not _NUMBER.match(fields["UID"]):
        raise BadURL("no UID")
    section = None
    if "SECTION" in fields:
        try:
            section = parse_section(unquote_to_bytes(fields["SECTION"]))
        except ParseError:
            raise BadURL("bad section") from None
    partial = None
    if "PARTIAL" in fields:
        found = _PARTIAL.match(fields["PARTIAL"])
        if not found:
            raise BadURL("bad partial")
        partial = (int(found.group(1)), int(found.group(2)) if found.group(2) else None)
    return MessageURL(host, unquote_to_bytes(mailbox_part), uidvalidity, int(fields["UID"]), section, partial)


def cut(data: bytes, partial: tuple[int, int | None] | None) -> bytes:
    """RFC 5092 section 5 ;PARTIAL: `length` octets from `origin` (past the end: none)."""
    if partial is None:
        return data
    origin, length = partial
    return data[origin:] if length is None else data[origin:origin + length]
