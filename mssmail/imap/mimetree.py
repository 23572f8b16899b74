"""A message's MIME tree with the byte offsets IMAP needs, sans-IO.

FETCH BODY[1.2.MIME], BODY[2.TEXT] and BODYSTRUCTURE sizes refer to the exact octets
of each part as stored. The stdlib `email` parser decodes headers and parameters
(RFC 2045, 2231) but does not keep offsets, so this module only cuts the bytes: the
header block from the body at the first empty line, and a multipart body at its
boundary delimiter lines (RFC 2046 section 5.1.1). Every header is read by `email`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from functools import cached_property

from mssmail.imap.grammar import Section

MAX_DEPTH = 40
MAX_PARTS = 2000
_HEADER_PARSER = BytesHeaderParser(policy=compat32)


def header_length(raw: bytes | memoryview) -> int:
    """Octets of the header block, including the empty line that ends it."""
    data = bytes(raw[:2])
    if data.startswith(b"\r\n"):
        return 2
    if data.startswith(b"\n"):
        return 1
    raw_bytes = raw if isinstance(raw, bytes) else bytes(raw)
    crlf = raw_bytes.find(b"\r\n\r\n")
    # A bare-LF blank line counts only if it comes first: no need to scan past the CRLF one.
    lf = raw_bytes.find(b"\n\n", 0, crlf + 3) if crlf >= 0 else raw_bytes.find(b"\n\n")
    candidates = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(candidates) if candidates else len(raw_bytes)


@dataclass
class Entity:
    """One MIME entity: `raw` is its header block then its body."""

    raw: bytes
    default_type: str = "text/plain"
    depth: int = 0
    children: list[Entity] = field(default_factory=list)

    @cached_property
    def header_end(self) -> int:
        return header_length(self.raw)

    @property
    def header(self) -> bytes:
        return self.raw[:self.header_end]

    @property
    def body(self) -> bytes:
        return self.raw[self.header_end:]

    @cached_property
    def headers(self) -> Message:
        msg = _HEADER_PARSER.parsebytes(self.header)
        msg.set_default_type(self.default_type)
        return msg

    @cached_property
    def content_type(self) -> str:
        try:
            return self.headers.get_content_type()
        except Exception:  # malformed header: RFC 2045 section 5.2 default
            return "text/plain"

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    @property
    def is_message(self) -> bool:
        return self.content_type in ("message/rfc822", "message/global")


def parse(raw: bytes, default_type: str = "text/plain", depth: int = 0,
          budget: list[int] | None = None) -> Entity:
    """The tree of `raw`; past the depth or part limits, parts are left as leaves."""
    budget = budget if budget is not None else [MAX_PARTS]
    entity = Entity(raw, default_type, depth)
    if depth >= MAX_DEPTH or budget[0] <= 0:
        return entity
    budget[0] -= 1
    if entity.is_multipart:
        boundary = None
        try:
            boundary = entity.headers.get_boundary()
        except Exception:
            boundary = None
        if boundary:
            child_type = "message/rfc822" if entity.content_type == "multipart/digest" else "text/plain"
            entity.children = [parse(part, child_type, depth + 1, budget)
                               for part in split_multipart(entity.body, boundary.encode("utf-8", "replace"))]
    elif entity.is_message:
        entity.children = [parse(entity.body, "text/plain", depth + 1, budget)]
    return entity


def split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """The body parts between delimiter lines (RFC 2046 section 5.1.1).

    The CRLF before a delimiter belongs to the delimiter; the preamble and epilogue are
    not parts; an unterminated multipart ends at the end of the data.

    A delimiter line is `--boundary`, optionally `--` (the close delimiter), optional
    spaces or tabs, then a line end or the end of the data; it starts the data or follows
    a line end that the previous delimiter line did not take. `bytes.find` looks for
    `--boundary` (a C-speed scan) and the line start and tail are checked where it is
    found: the same parts as `split_multipart_regex`, whose pattern, starting with a line
    end, makes the regex engine try every byte.
    """
    if b"\n" in boundary or b"\r" in boundary:  # never seen in practice: keep it exact
        return split_multipart_regex(body, boundary)
    dash = b"--" + boundary
    parts: list[bytes] = []
    start = None  # where the current part's bytes begin
    floor = 0  # a delimiter line (with its leading line end) starts here or later
    size = len(body)
    pos = body.find(dash)
    while pos >= 0:
        if pos >= floor + 2 and body[pos - 1] == 0x0A and body[pos - 2] == 0x0D:
            begin = pos - 2
        elif pos >= floor + 1 and body[pos - 1] == 0x0A:
            begin = pos - 1
        elif pos == 0:
            begin = 0
        else:
            pos = body.find(dash, pos + 1)
            continue
        after = pos + len(dash)
        close = body.startswith(b"--", after)
        end = _line_end(body, after + 2, size) if close else -1
        if end < 0:
            close = False
            end = _line_end(body, after, size)
            if end < 0:
                pos = body.find(dash, pos + 1)
                continue
        if start is not None:
            parts.append(body[start:begin])
        if close:
            return parts
        start = floor = end
        if len(parts) >= MAX_PARTS:
            return parts
        pos = body.find(dash, end)
    if start is not None:
        parts.append(body[start:])
    return parts


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


def split_multipart_regex(body: bytes, boundary: bytes) -> list[bytes]:
    """The former regex implementation of `split_multipart`, kept as the reference its
    tests compare against (it tries the pattern at every byte, hence the rewrite)."""
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
    """Part `1.2.3` of a message (RFC 3501 section 6.4.5), or None if there is none.

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
    """The header lines named (or, negated, not named), as they are, then an empty line."""
    wanted = {n.lower() for n in names}
    out: list[bytes] = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        keep = (name in wanted) != negate
        if keep:
            out.append(line)
    out.append(b"\r\n")
    return b"".join(out)


def section_bytes(top: Entity, section: Section) -> bytes | None:
    """The octets of BODY[section]; None when the part does not exist."""
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
