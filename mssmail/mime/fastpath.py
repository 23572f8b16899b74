"""The regex fast path of `headers.parse`, for the listing summary (sans-IO).

The summary reads a handful of fields from the message's header block and from each
MIME part's, for every message delivered; `headers.parse` walks the block line by line
in Python. On a block made only of well-formed field lines and their continuations (the
usual case) one regular expression finds the wanted fields at C speed, with exactly the
values `headers.parse` gives (`Field.value`: after the colon, leading blanks and the
final line end removed, folding kept). On anything else it raises `Unsure` and the
caller uses `headers.parse`. The property tests in tests/unit/mime/ check both claims,
and `headers.parse` is itself checked against the email package's reading.
"""

from __future__ import annotations

import re


class Unsure(Exception):
    """The block has a feature this fast path does not read: use `headers.parse`."""


Fields = dict[bytes, list[bytes]]

# A header block made only of well-formed field lines (a name of printable ASCII other
# than ":", RFC 5322 2.2, right before the colon) and continuations, no bare CR.
_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\n]*(?:\n[ \t][^\n]*)*(?:\n|\Z))*")
_PATTERNS: dict[frozenset[bytes], re.Pattern[bytes]] = {}


def _pattern(wanted: frozenset[bytes]) -> re.Pattern[bytes]:
    """Fields named in `wanted` (any case) at line starts, value with its folding."""
    pattern = _PATTERNS.get(wanted)
    if pattern is None:
        names = b"|".join(re.escape(name) for name in sorted(wanted))
        pattern = re.compile(rb"(?im)^(" + names + rb"):[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)")
        _PATTERNS[wanted] = pattern
    return pattern


def scan_fields(block: bytes, wanted: frozenset[bytes]) -> Fields:
    """The values of the wanted fields (lowercase names), in order, as `headers.parse`
    gives them; `block` is the header block without its empty line. Raises Unsure."""
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        raise Unsure("bare CR")
    if not _PLAIN_BLOCK.fullmatch(block):
        raise Unsure("not a plain header block")
    fields: Fields = {}
    for name, value in _pattern(wanted).findall(block):
        if value.endswith(b"\r"):
            value = value[:-1]
        fields.setdefault(name.lower(), []).append(value)
    return fields


def first(fields: Fields, name: bytes) -> bytes | None:
    values = fields.get(name)
    return values[0] if values else None
