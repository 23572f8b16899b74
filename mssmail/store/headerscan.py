"""A one-pass reader of header blocks that agrees with the email package's compat32 parse.

The listing summary reads a handful of fields from the message's header block and
from each MIME part's; the email package's FeedParser costs tens of microseconds per
block. These functions give the same values (what `Message.get`, `get_all`,
`get_content_maintype`, `get_param` and `get_filename` return under compat32) from
bytes, or raise `Unsure` on anything they do not reproduce exactly, so that the caller
falls back to the email package. Sans-IO: bytes in, values out.
"""

from __future__ import annotations

import re
from email.utils import quote, unquote


class Unsure(Exception):
    """The input has a feature this reader does not reproduce: use the email package."""


# What the FeedParser accepts as a field line: a field name of printable ASCII other
# than ":" (possibly empty), then ":". Continuation and "From " lines are seen first.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")

Fields = dict[bytes, list[bytes]]


def _flush(fields: Fields, wanted: frozenset[bytes], name: bytes, parts: list[bytes]) -> None:
    key = name.lower()
    if key in wanted:
        first = parts[0].lstrip(b" \t")
        value = first + b"".join(parts[1:]) if len(parts) > 1 else first
        fields.setdefault(key, []).append(value.rstrip(b"\r\n"))


# A header block made only of well-formed field lines and their continuations (the
# usual case): then a regex can pick the wanted fields without a per-line loop.
_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\n]*(?:\n[ \t][^\n]*)*(?:\n|\Z))*")
_PATTERNS: dict[frozenset[bytes], re.Pattern[bytes]] = {}


def _pattern(wanted: frozenset[bytes]) -> re.Pattern[bytes]:
    """Fields named in `wanted` (any case) at line starts, value with its folding."""
    pattern = _PATTERNS.get(wanted)
    if pattern is None:
        names = b"|".join(re.escape(name) for name in sorted(wanted))
        pattern = re.compile(rb"(?im)^(" + names + rb"):([^\n]*(?:\n[ \t][^\n]*)*)")
        _PATTERNS[wanted] = pattern
    return pattern


def scan_fields(block: bytes, wanted: frozenset[bytes]) -> Fields:
    """The raw values of the wanted fields (lowercase names), in order, as compat32 keeps them."""
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        raise Unsure("bare CR")
    if not _PLAIN_BLOCK.fullmatch(block):
        return scan_lines(block, wanted)
    fields: Fields = {}
    for name, value in _pattern(wanted).findall(block):
        fields.setdefault(name.lower(), []).append(value.lstrip(b" \t").rstrip(b"\r\n"))
    return fields


def scan_lines(block: bytes, wanted: frozenset[bytes]) -> Fields:
    """The raw values of the wanted fields (lowercase names), in order, as compat32 keeps them.

    Mirrors the FeedParser: lines end with CRLF or LF; the header section ends at an
    empty line or at the first line that is neither a field, a continuation nor a
    leading "From " envelope line; continuations of nothing are dropped; the value is
    the text after the colon, left-stripped of blanks, folding kept, trailing CR/LF
    removed. A bare CR (a line end for the email package) or a "From " line past the
    first raises Unsure.
    """
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        raise Unsure("bare CR")
    fields: Fields = {}
    lines = block.split(b"\n")
    last = len(lines) - 1
    name: bytes | None = None
    parts: list[bytes] = []
    for lineno, line in enumerate(lines):
        if lineno == last:
            if not line:
                break
        else:
            if line == b"" or line == b"\r":
                break
            line += b"\n"
        if line[0] in b" \t":
            if name is not None:
                parts.append(line)
            continue
        if name is not None:
            _flush(fields, wanted, name, parts)
            name = None
        if line.startswith(b"From "):
            if lineno == 0:
                continue
            raise Unsure("misplaced envelope line")
        match = _FIELD.match(line)
        if match is None:
            break
        colon = match.end() - 1
        if colon == 0:
            continue
        name, parts = line[:colon], [line[colon + 1:]]
    if name is not None:
        _flush(fields, wanted, name, parts)
    return fields


def first(fields: Fields, name: bytes) -> bytes | None:
    values = fields.get(name)
    return values[0] if values else None


def as_text(value: bytes) -> str:
    """str() of what compat32's `get` returns: non-ASCII bytes come back as U+FFFD
    (it wraps such values in an unknown-8bit Header)."""
    return value.decode("ascii") if value.isascii() else value.decode("ascii", "replace")


def ascii_text(value: bytes) -> str:
    """For values the attachment walk calls string methods on: compat32 returns a Header
    object for non-ASCII ones, on which the walk behaves differently."""
    if not value.isascii():
        raise Unsure("non-ASCII structural header")
    return value.decode("ascii")


def content_maintype(content_type: str | None) -> str:
    """`Message.get_content_maintype` of a header-only parse (default text/plain)."""
    if content_type is None:
        return "text"
    ctype = content_type.partition(";")[0].strip().lower()
    if ctype.count("/") != 1:
        return "text"
    return ctype.split("/")[0]


def _split_params(value: str) -> list[str]:
    """Parameters split on ";" outside quoted strings, the way the email package splits them."""
    pieces = []
    rest = value
    while True:
        end = rest.find(";")
        while end > 0 and (rest.count('"', 0, end) - rest.count('\\"', 0, end)) % 2:
            end = rest.find(";", end + 1)
        if end < 0:
            end = len(rest)
        piece = rest[:end]
        if "=" in piece:
            at = piece.index("=")
            piece = piece[:at].strip().lower() + "=" + piece[at + 1:].strip()
        pieces.append(piece.strip())
        rest = rest[end:]
        if rest[:1] != ";":
            return pieces
        rest = rest[1:]


_MISSING = object()


def get_param(value: str, param: str) -> object:
    """`Message.get_param(param)` of a header whose (first) value is `value`; _MISSING
    when absent. RFC 2231 parameters (names with "*") raise Unsure."""
    pairs = []
    for piece in _split_params(value):
        name, sep, val = piece.partition("=")
        pairs.append((name.strip(), val.strip()) if sep else (piece.strip(), ""))
    if any("*" in name for name, _ in pairs[1:]):
        # The email package reorders (and may fail on) RFC 2231 continuations.
        raise Unsure("RFC 2231 parameter")
    wanted = param.lower()
    for index, (name, val) in enumerate(pairs):
        if name.lower() == wanted:
            return unquote(val) if index == 0 else unquote(f'"{quote(unquote(val))}"')
    return _MISSING


def get_boundary(content_type: str) -> object:
    """The boundary parameter, or None when absent."""
    value = get_param(content_type, "boundary")
    return None if value is _MISSING else value


def has_filename(disposition: str | None, content_type: str | None) -> bool:
    """bool(`Message.get_filename()`): the Content-Disposition filename, else the
    Content-Type name, unquoted and stripped."""
    filename: object = _MISSING
    if disposition is not None:
        filename = get_param(disposition, "filename")
    if filename is _MISSING and content_type is not None:
        filename = get_param(content_type, "name")
    if filename is _MISSING:
        return False
    return bool(unquote(str(filename)).strip())
