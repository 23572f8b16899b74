"""A message's MIME part tree on byte offsets, sans-IO.

IMAP's FETCH BODY[1.2.MIME], BODY[2.TEXT] and BODYSTRUCTURE sizes refer to the exact
octets of each part as stored, and a signature covers the exact octets of a part
(RFC 8551 3.1.1), so the tree never rewrites anything: each entity is a (start, header
end, end) triple into the one message buffer, cut at the first empty line
(`headers.header_length`) and, for a multipart, at its delimiter lines (RFC 2046 5.1.1).

Bounds (an attacker chooses the structure): past `MAX_DEPTH` levels or `MAX_PARTS`
entities a part is left unsplit and the entity is marked defective. Broken structure is
read as far as it goes and reported in `defects`: no boundary parameter, no delimiter
line, no close delimiter. Nothing here raises on any input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from mssmail.mime import headers as hdr

MAX_DEPTH = 40
MAX_PARTS = 2000

header_length = hdr.header_length  # where the header block ends: one rule for every entity

# Entity defects
NO_BOUNDARY = "multipart without boundary"
NO_DELIMITER = "multipart without delimiter line"
NO_CLOSE_DELIMITER = "multipart without close delimiter"
TOO_DEEP = "nested too deep"
TOO_MANY_PARTS = "too many parts"


@dataclass(eq=False)
class Entity:
    """One MIME entity: data[start:header_end] is its header block (with the empty line),
    data[header_end:end] its body. Children share the same `data`."""

    data: bytes
    start: int
    end: int
    default_type: str = "text/plain"
    depth: int = 0
    children: list[Entity] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    @cached_property
    def header_end(self) -> int:
        return self.start + hdr.header_length(self.data, self.start, self.end)

    @property
    def raw(self) -> bytes:
        if self.start == 0 and self.end == len(self.data):
            return self.data
        return self.data[self.start:self.end]

    @property
    def header(self) -> bytes:
        return self.data[self.start:self.header_end]

    @property
    def body(self) -> bytes:
        return self.data[self.header_end:self.end]

    @property
    def body_size(self) -> int:
        return self.end - self.header_end

    @cached_property
    def headers(self) -> hdr.Headers:
        return hdr.parse(self.header)

    @cached_property
    def content_type(self) -> str:
        return self.headers.content_type(self.default_type)

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    @property
    def is_message(self) -> bool:
        return self.content_type in ("message/rfc822", "message/global")

    def walk(self) -> Iterator[Entity]:
        """This entity and every entity under it, depth first, in order."""
        yield self
        for child in self.children:
            yield from child.walk()


def parse(raw: bytes, default_type: str = "text/plain") -> Entity:
    """The tree of `raw`; never raises. Past the depth or part bounds, parts stay leaves."""
    data = bytes(raw)
    top = Entity(data, 0, len(data), default_type)
    budget = [MAX_PARTS - 1]
    stack = [top]
    while stack:  # iterative: no Python recursion limit to meet on hostile nesting
        entity = stack.pop()
        if entity.is_multipart:
            boundary = entity.headers.boundary()
            if boundary is None:
                entity.defects.append(NO_BOUNDARY)
                continue
            child_type = "message/rfc822" if entity.content_type == "multipart/digest" else "text/plain"
            spans, closed = split_offsets(data, entity.header_end, entity.end, _boundary_bytes(boundary))
            if not spans:
                entity.defects.append(NO_DELIMITER)
                continue
            if not closed:
                entity.defects.append(NO_CLOSE_DELIMITER)
            allowed = _room(entity, top, budget, len(spans))
            entity.children = [Entity(data, s, e, child_type, entity.depth + 1) for s, e in spans[:allowed]]
        elif entity.is_message and _room(entity, top, budget, 1):
            entity.children = [Entity(data, entity.header_end, entity.end, "text/plain", entity.depth + 1)]
        stack.extend(reversed(entity.children))
    return top


def _room(entity: Entity, top: Entity, budget: list[int], wanted: int) -> int:
    """How many of `wanted` children `entity` may have: none past MAX_DEPTH, no more than
    the part budget left. Parts past the bound are not shown, and the entity says so."""
    if entity.depth + 1 > MAX_DEPTH:
        entity.defects.append(TOO_DEEP)
        return 0
    allowed = min(wanted, budget[0])
    if allowed < wanted:
        entity.defects.append(TOO_MANY_PARTS)
        if entity is not top and TOO_MANY_PARTS not in top.defects:
            top.defects.append(TOO_MANY_PARTS)
    budget[0] -= allowed
    return allowed


def _boundary_bytes(boundary: str) -> bytes:
    return boundary.encode("utf-8", "surrogateescape")


def split_offsets(data: bytes, start: int, end: int, boundary: bytes) -> tuple[list[tuple[int, int]], bool]:
    """([(start, end) of each body part], closed) of the multipart body data[start:end].

    RFC 2046 5.1.1: a delimiter line is `--boundary`, then `--` for the close delimiter,
    optional spaces or tabs (transport padding), then a line end or the end of the data;
    it starts the body or follows a line end, and that line end belongs to the delimiter,
    not to the part before it. The preamble and epilogue are not parts; an unterminated
    multipart ends at the end of the data (`closed` False). `bytes.find` looks for
    `--boundary` (a C-speed scan) and the line start and tail are checked where it is found.
    """
    if b"\n" in boundary or b"\r" in boundary or not boundary:
        return [], False  # no delimiter line can hold it
    dash = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = -1  # where the current part's bytes begin
    floor = start  # a delimiter line (with its leading line end) starts here or later
    pos = data.find(dash, start, end)
    while pos >= 0:
        if pos >= floor + 2 and data[pos - 1] == 0x0A and data[pos - 2] == 0x0D:
            begin = pos - 2
        elif pos >= floor + 1 and data[pos - 1] == 0x0A:
            begin = pos - 1
        elif pos == start:
            begin = start
        else:
            pos = data.find(dash, pos + 1, end)
            continue
        after = pos + len(dash)
        close = data.startswith(b"--", after, end)
        line_end = _line_end(data, after + 2, end) if close else -1
        if line_end < 0:
            close = False
            line_end = _line_end(data, after, end)
            if line_end < 0:
                pos = data.find(dash, pos + 1, end)
                continue
        if part_start >= 0:
            spans.append((part_start, begin))
        if close:
            return spans, True
        part_start = floor = line_end
        if len(spans) >= MAX_PARTS:
            return spans, False
        pos = data.find(dash, line_end, end)
    if part_start >= 0:
        spans.append((part_start, end))
    return spans, False


def _line_end(data: bytes, at: int, size: int) -> int:
    """Past optional spaces or tabs then a line end (or the end of the data) at `at`; -1 if none."""
    while at < size and data[at] in (0x20, 0x09):
        at += 1
    if at == size:
        return size
    if data[at] == 0x0A:
        return at + 1
    if data[at] == 0x0D and at + 1 < size and data[at + 1] == 0x0A:
        return at + 2
    return -1


def split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """The body parts of a multipart body, as bytes (see `split_offsets`)."""
    spans, _ = split_offsets(body, 0, len(body), boundary)
    return [body[s:e] for s, e in spans]


def split_multipart_regex(body: bytes, boundary: bytes) -> list[bytes]:
    """The same parts by one regular expression that reads RFC 2046 5.1.1 literally: the
    reference `split_offsets` is tested against (it tries the pattern at every byte,
    too slow for bodies of megabytes)."""
    if b"\n" in boundary or b"\r" in boundary or not boundary:
        return []
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[bytes] = []
    start = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start:match.start()])
        if match.group(1):
            return parts
        start = match.end()
        if len(parts) >= MAX_PARTS:
            return parts
    if start is not None:
        parts.append(body[start:])
    return parts


def find_part(top: Entity, numbers: tuple[int, ...]) -> Entity | None:
    """Part `1.2.3` of a message (RFC 3501 6.4.5), or None if there is none.

    A message that is not multipart has a single part 1 (itself); the parts of a
    message/rfc822 part are those of the message it encapsulates.
    """
    current = top
    for i, number in enumerate(numbers):
        container = current
        if i > 0 and current.is_message:
            if not current.children:
                return None
            container = current.children[0]
        if container.is_multipart:
            if not 1 <= number <= len(container.children):
                return None
            current = container.children[number - 1]
        elif number == 1:
            current = container
        else:
            return None
    return current


def header_fields(header: bytes, names: tuple[str, ...], negate: bool) -> bytes:
    """The header fields named (or, negated, not named), as they are, then an empty line
    (RFC 3501 6.4.5 HEADER.FIELDS); fields as `headers.parse` splits them."""
    wanted = {n.lower() for n in names}
    parsed = hdr.parse(header)
    out = [parsed.block[f.start:f.end] for f in parsed.fields if (f.key in wanted) != negate]
    out.append(b"\r\n")
    return b"".join(out)


class SectionLike(Protocol):
    """What BODY[...] names (mssmail.imap.grammar.Section): a part number, a text
    specifier ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS[.NOT]") and field names."""

    @property
    def part(self) -> tuple[int, ...]: ...

    @property
    def text(self) -> str: ...

    @property
    def fields(self) -> tuple[str, ...]: ...


def section_bytes(top: Entity, section: SectionLike) -> bytes | None:
    """The octets of BODY[section] (RFC 3501 6.4.5); None when the part does not exist."""
    if section.part:
        entity = find_part(top, section.part)
        if entity is None:
            return None
        if not section.text:
            return entity.body
        if section.text == "MIME":
            return entity.header
        if not entity.is_message or not entity.children:
            return None
        message = entity.children[0]
    else:
        if not section.text:
            return top.raw
        message = top
    if section.text == "HEADER":
        return message.header
    if section.text == "TEXT":
        return message.body
    return header_fields(message.header, section.fields, section.text.endswith(".NOT"))
