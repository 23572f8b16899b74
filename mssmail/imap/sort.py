"""SORT (RFC 5256 section 3) and SORT=DISPLAY (RFC 5957), sans-IO: sort keys from a
message's header fields, the base subject, the order of a set of messages.

The session gathers, for each message a search matched, its size, INTERNALDATE and the
raw header fields SORT reads (From, To, Cc, Subject, Date); this module turns them into
keys and orders the UIDs. Ties keep the mailbox order (RFC 5256 section 3: "sorted
according to the order in which they appear in the mailbox"): UID order, since message
numbers follow UIDs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime

# RFC 5256 sort-key, and RFC 5957's two display keys.
SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")
HEADER_FIELDS = ("from", "to", "cc", "subject", "date")


class SortError(ValueError):
    """A SORT program the grammar refuses (RFC 5256 section 5: tagged BAD)."""


@dataclass
class SortInput:
    """What sorting needs of one message."""

    uid: int
    size: int
    internal_date: datetime
    headers: dict[str, str] = field(default_factory=dict)  # lower-case name -> raw value


def parse_program(words: Sequence[str]) -> list[tuple[str, bool]]:
    """`(REVERSE SUBJECT DATE)` as words -> [(key, reversed)]; REVERSE applies to the next key."""
    out: list[tuple[str, bool]] = []
    reverse = False
    for word in (w.upper() for w in words):
        if word == "REVERSE":
            if reverse:
                raise SortError("REVERSE twice in a row")
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise SortError(f"unknown sort key {word[:20]}")
        out.append((word, reverse))
        reverse = False
    if reverse or not out:
        raise SortError("a sort program needs a key after REVERSE" if reverse else "empty sort program")
    return out


def decode_words(value: str) -> str:
    """Unfolded, RFC 2047 words decoded (what a reader sees)."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value)
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # malformed encoded words: the raw text
        return value


_LEADER = re.compile(r"^(?:(?:re|fwd?)[ \t]*(?:\[[^\[\]]*\][ \t]*)*:|\[[^\[\]]*\][ \t]*)", re.I)
_TRAILER = re.compile(r"(?:[ \t]*\(fwd\)|[ \t]+)$", re.I)


def base_subject(subject: str) -> str:
    """RFC 5256 section 2.1: the subject without Re:, Fwd:, [blob] leaders, (fwd) trailers
    and a [fwd: ...] wrapper, white space collapsed; compared case-insensitively."""
    text = re.sub(r"[ \t\r\n]+", " ", decode_words(subject)).strip()
    while True:
        # (2) trailers "(fwd)" and white space, repeatedly
        while True:
            stripped = _TRAILER.sub("", text)
            if stripped == text:
                break
            text = stripped
        # (3)-(5) leaders "re:", "fw:", "fwd:" with optional [blob]s, and lone [blob]s
        while True:
            match = _LEADER.match(text)
            if match is None:
                break
            rest = text[match.end():].lstrip(" \t")
            if match.group(0).startswith("[") and not rest:
                break  # (4): a blob is kept when removing it would leave nothing
            text = rest
        # (6) [fwd: ...] wrapper
        if text.lower().startswith("[fwd:") and text.endswith("]"):
            text = text[5:-1].strip(" \t")
            continue
        return text


_GROUP = re.compile(r'^[ \t]*((?:"(?:[^"\\]|\\.)*"|[^:<>@",;()])+):')


def _first_address(value: str | None) -> tuple[str, str]:
    """(display name, addr-spec) of the first address of a header, or ("", "").

    A group (RFC 5322 3.4, `name: a@b, c@d;`) comes first as itself, as in ENVELOPE
    (RFC 3501 7.4.2: the group's start is an address whose mailbox is the group name):
    its name is both the mailbox and the display name that SORT compares."""
    if not value:
        return "", ""
    value = re.sub(r"\r?\n(?=[ \t])", "", value)
    group = _GROUP.match(value)
    if group is not None:
        name = decode_words(group.group(1).strip().strip('"'))
        return name, name
    for name, address in getaddresses([value]):
        if name or address:
            return decode_words(name).strip(), address.strip()
    return "", ""


def _mailbox_part(address: str) -> str:
    return address.rsplit("@", 1)[0] if "@" in address else address  # a group: its name


def _ascii_casemap(text: str) -> str:
    """i;ascii-casemap (RFC 4790 9.2): only a-z fold."""
    return text.translate(_UPPER)


_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def sent_date(item: SortInput) -> datetime:
    """RFC 5256 section 3 (DATE): the Date: header in UTC; the INTERNALDATE where it is
    missing or cannot be parsed."""
    raw = item.headers.get("date")
    if raw:
        try:
            parsed = parsedate_to_datetime(raw.strip())
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    return item.internal_date.astimezone(UTC)


def key_of(item: SortInput, key: str) -> object:
    headers = item.headers
    if key == "ARRIVAL":
        return item.internal_date.astimezone(UTC)
    if key == "DATE":
        return sent_date(item)
    if key == "SIZE":
        return item.size
    if key == "SUBJECT":
        return _ascii_casemap(base_subject(headers.get("subject", "")))
    if key in ("FROM", "TO", "CC"):
        # RFC 5256: the addr-mailbox (local part) of the first address.
        return _ascii_casemap(_mailbox_part(_first_address(headers.get(key.lower()))[1]))
    # RFC 5957: the display name of the first address, else its addr-spec, compared
    # with i;unicode-casemap (approximated by Unicode case folding).
    name, address = _first_address(headers.get("from" if key == "DISPLAYFROM" else "to"))
    return (name or address).casefold()


class _Reversed:
    """Inverts the order of a key (REVERSE)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def sort_uids(program: Sequence[tuple[str, bool]], items: Sequence[SortInput]) -> list[int]:
    """The UIDs of `items` in the order of `program`, ties in UID order."""
    def full_key(item: SortInput) -> tuple[object, ...]:
        parts: list[object] = []
        for key, reverse in program:
            value = key_of(item, key)
            parts.append(_Reversed(value) if reverse else value)
        parts.append(item.uid)
        return tuple(parts)

    return [item.uid for item in sorted(items, key=full_key)]
