"""Header blocks: split into fields, read by name, encoded words decoded (sans-IO).

One reading of a header block for every part of the server (crypto, the listing summary,
IMAP, the submission policy, the connectors), so that what one of them checks is what
another shows. The rules are RFC 5322's:

- A line ends with CRLF (RFC 5322 2.1); a bare LF is accepted as a line end (mail
  written by local tools) and reported; a bare CR is never a line end and is reported.
- The header block ends at the first empty line (RFC 5322 2.1, 3.5); data with no empty
  line is all header and has no body (reported).
- A field is a name, a colon and a value (RFC 5322 2.2); a line that starts with a space
  or a tab continues the field before it (folding, 2.2.3); unfolding removes the line
  ends before such white space and nothing else.
- Obsolete syntax is read, and reported: white space between the name and the colon
  (RFC 5322 4.5, obs-optional), an mbox "From " envelope line first.

What other readers may parse differently is reported as a *defect* instead of being
guessed at silently: a policy that must be sure of what the reader sees (the submission
From check) refuses a block with defects, the others read what they can. Nothing here
raises on any input.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.policy
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # params imports this module: the type only, for the annotation
    from mssmail.mime.params import Structured

# Defects: short stable names (policies and tests compare them), in the order found.
BARE_CR = "bare CR"  # a CR not followed by LF: some readers end the line there
BARE_LF = "bare LF"  # a line ended by LF alone (accepted as a line end)
NO_BODY = "no empty line"  # the data ends inside the header block
ENVELOPE_LINE = "mbox From line"  # "From sender date" first: not a field (RFC 4155)
NOT_A_FIELD = "line without colon"  # a line that is neither a field nor a continuation
LEADING_CONTINUATION = "continuation of nothing"  # white space before the first field
SPACE_BEFORE_COLON = "space before colon"  # "From : x" (RFC 5322 4.5 obs-optional)
BAD_FIELD_NAME = "bad field name"  # empty, or octets outside 33-126 (NUL, space, 8-bit)
NUL = "NUL"  # a NUL octet anywhere in the block (RFC 5322 2.2: not allowed)
LONG_LINE = "line over 998 octets"  # RFC 5322 2.1.1

MAX_LINE = 998  # RFC 5322 2.1.1, without the CRLF

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def header_length(raw: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """Octets of the header block at raw[start:end], including the empty line that ends it.

    The empty line is the first line with nothing before its line end (CRLF or a bare
    LF, RFC 5322 2.1): right at the start, or after a LF. Two `find`s, the second bounded
    by the first, so a body is never scanned twice. No empty line: the whole data.
    """
    data = raw if isinstance(raw, bytes | bytearray) else bytes(raw)
    stop = len(data) if end is None else end
    if data.startswith(b"\r\n", start, stop):
        return 2
    if data.startswith(b"\n", start, stop):
        return 1
    crlf = data.find(b"\n\r\n", start, stop)
    lf = data.find(b"\n\n", start, stop if crlf < 0 else crlf + 2)
    if lf >= 0 and (crlf < 0 or lf <= crlf):
        return lf + 2 - start
    if crlf >= 0:
        return crlf + 3 - start
    return stop - start


def block_offsets(raw: bytes | bytearray, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(end of the last field's line, start of the body) of the entity at raw[start:end],
    as offsets into raw: the empty line lies between them. No empty line: both are the end.
    The same rule as `header_length`, in as few operations as can be (the summary calls
    it for every part of every message delivered)."""
    stop = len(raw) if end is None else end
    if start < stop:
        first = raw[start]
        if first == 0x0A:
            return start, start + 1
        if first == 0x0D and start + 1 < stop and raw[start + 1] == 0x0A:
            return start, start + 2
    crlf = raw.find(b"\n\r\n", start, stop)
    lf = raw.find(b"\n\n", start, stop if crlf < 0 else crlf + 2)
    if lf >= 0 and (crlf < 0 or lf <= crlf):
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return stop, stop


def unfold(value: bytes) -> bytes:
    """RFC 5322 2.2.3: remove the line ends before folding white space, nothing else."""
    if b"\n" not in value:
        return value
    return _FOLD.sub(b"", value)


def text(value: bytes) -> str:
    """A header value as text: UTF-8 (RFC 6532), undecodable octets as U+FFFD."""
    return value.decode("ascii") if value.isascii() else value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Field:
    """One header field. `value` is the octets after the colon, folding kept, without the
    final line end or the white space right after the colon; `start`/`end` are the
    offsets of the whole field (line end included) in the block."""

    name: bytes
    value: bytes
    start: int
    end: int

    @property
    def key(self) -> str:
        """The name for comparisons (field names are case-insensitive, RFC 5322 1.2.2)."""
        return self.name.decode("ascii", "replace").lower()

    @property
    def unfolded(self) -> bytes:
        return unfold(self.value).strip(b" \t")


@dataclass(slots=True)
class Headers:
    """The fields of one header block, with the defects met while splitting it."""

    block: bytes
    fields: list[Field] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    _index: dict[str, list[Field]] | None = None

    def _by_name(self) -> dict[str, list[Field]]:
        if self._index is None:
            index: dict[str, list[Field]] = {}
            for f in self.fields:
                index.setdefault(f.key, []).append(f)
            self._index = index
        return self._index

    def all(self, name: str) -> list[Field]:
        """Every field of that name, in order (case-insensitive)."""
        return self._by_name().get(name.lower(), [])

    def first(self, name: str) -> Field | None:
        found = self._by_name().get(name.lower())
        return found[0] if found else None

    def raw(self, name: str) -> bytes | None:
        """The first such field's value unfolded and trimmed, as octets (8-bit kept)."""
        found = self.first(name)
        return None if found is None else found.unfolded

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first such field's value unfolded and trimmed, as text."""
        found = self.first(name)
        return default if found is None else text(found.unfolded)

    def get_all(self, name: str) -> list[str]:
        return [text(f.unfolded) for f in self.all(name)]

    def items(self) -> list[tuple[str, str]]:
        """(name, value) of every field in order, the value as text with its folding."""
        return [(f.name.decode("ascii", "replace"), text(f.value)) for f in self.fields]

    def __contains__(self, name: str) -> bool:
        return self.first(name) is not None

    # Content-* helpers: the structured fields every user of the tree reads.
    def content(self, name: str = "content-type") -> Structured:
        """The value and parameters of a structured field (Content-Type by default)."""
        from mssmail.mime.params import parse_structured

        found = self.first(name)
        return parse_structured(None if found is None else found.value)

    def content_type(self, default: str = "text/plain") -> str:
        """type/subtype in lower case; RFC 2045 5.2: missing or invalid gives the default."""
        from mssmail.mime.params import media_type

        found = self.first("content-type")
        return media_type(None if found is None else found.value, default)

    def param(self, name: str, header: str = "content-type") -> str | None:
        return self.content(header).get(name)

    def boundary(self) -> str | None:
        """The multipart boundary (RFC 2046 5.1.1), unfolded; None when absent or empty."""
        value = self.param("boundary")
        return value or None

    def filename(self) -> str | None:
        """Content-Disposition filename (RFC 2183 2.3), else the Content-Type name."""
        name = self.param("filename", "content-disposition")
        if name is None:
            name = self.param("name")
        return name

    def charset(self) -> str | None:
        value = self.param("charset")
        return value.lower() if value else None

    def transfer_encoding(self) -> str:
        """RFC 2045 6.1: 7bit when absent."""
        value = self.get("content-transfer-encoding")
        return (value or "7bit").strip().lower() or "7bit"


def parse(block: bytes | bytearray | memoryview) -> Headers:
    """The fields of a header block (with or without its empty line; anything after the
    empty line is ignored). Never raises."""
    data = bytes(block)
    size = header_length(data)
    data = data[:size]
    headers = Headers(data)
    defects = headers.defects
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        defects.append(BARE_CR)
    if b"\0" in data:
        defects.append(NUL)
    if not (data.endswith(b"\n\n") or data.endswith(b"\n\r\n") or data in (b"\r\n", b"\n")):
        defects.append(NO_BODY)
    fields = headers.fields
    name: bytes | None = None
    field_start = value_start = 0
    pos = 0
    first_line = True
    bare_lf = False
    while pos < size:
        nl = data.find(b"\n", pos)
        line_end = size if nl < 0 else nl + 1
        content_end = nl - 1 if nl > 0 and data[nl - 1] == 0x0D else (size if nl < 0 else nl)
        if nl >= 0 and (nl == 0 or data[nl - 1] != 0x0D):
            bare_lf = True
        if content_end - pos > MAX_LINE and LONG_LINE not in defects:
            defects.append(LONG_LINE)
        if content_end == pos:  # the empty line: end of the block
            break
        lead = data[pos]
        if lead in (0x20, 0x09):
            if name is None and LEADING_CONTINUATION not in defects:
                defects.append(LEADING_CONTINUATION)
            pos = line_end
            first_line = False
            continue
        if name is not None:
            fields.append(_field(data, name, field_start, value_start, pos))
            name = None
        colon = data.find(b":", pos, content_end)
        if first_line and data.startswith(b"From ", pos) and (colon < 0 or b" " in data[pos + 5:colon]):
            defects.append(ENVELOPE_LINE)
        elif colon < 0:
            if NOT_A_FIELD not in defects:
                defects.append(NOT_A_FIELD)
        else:
            raw_name = data[pos:colon]
            stripped = raw_name.rstrip(b" \t")
            if stripped != raw_name and SPACE_BEFORE_COLON not in defects:
                defects.append(SPACE_BEFORE_COLON)
            if not _NAME.fullmatch(stripped) and BAD_FIELD_NAME not in defects:
                defects.append(BAD_FIELD_NAME)
            name, field_start, value_start = stripped, pos, colon + 1
        first_line = False
        pos = line_end
    if name is not None:
        fields.append(_field(data, name, field_start, value_start, pos))
    if bare_lf:
        defects.append(BARE_LF)
    return headers


def _field(data: bytes, name: bytes, start: int, value_start: int, end: int) -> Field:
    value = data[value_start:end]
    if value.endswith(b"\r\n"):
        value = value[:-2]
    elif value.endswith(b"\n"):
        value = value[:-1]
    return Field(name, value.lstrip(b" \t"), start, end)


# RFC 2047 section 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?=";
# RFC 2231 section 5 adds "*language" after the charset.
_ENCODED_WORD = re.compile(rb"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _word_bytes(encoding: bytes, payload: bytes) -> bytes | None:
    if encoding in (b"b", b"B"):
        try:
            # RFC 2047 4.1: base64; missing padding is common and harmless.
            return binascii.a2b_base64(payload + b"=" * (-len(payload) % 4))
        except binascii.Error:
            return None
    # RFC 2047 4.2: "_" is a space, "=XX" an octet.
    return _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), payload.replace(b"_", b" "))


def _charset(name: bytes) -> str | None:
    """The codec name for a charset Python knows as a text encoding, else None."""
    try:
        info = codecs.lookup(name.decode("ascii"))
    except (LookupError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode_words(value: bytes | str) -> str:
    """An unfolded header value with RFC 2047 encoded words decoded.

    White space between two encoded words is dropped (RFC 2047 6.2), and the octets of
    adjacent words in one charset are joined before decoding, so that a character split
    across two words comes out whole. A word with an unknown charset or broken base64 is
    left as written. Words not separated from text by white space are decoded too: many
    mailers write them so, and every common reader decodes them.
    """
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    raw = unfold(raw)
    if b"=?" not in raw:
        return text(raw)
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            joined = b"".join(pending)
            try:
                out.append(joined.decode(pending_charset or "ascii", "replace"))
            except (LookupError, ValueError):  # a codec that fails even with "replace"
                out.append(joined.decode("utf-8", "replace"))
        pending, pending_charset = [], None

    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos:match.start()]
        charset = _charset(match.group(1))
        decoded = None if charset is None else _word_bytes(match.group(2), match.group(3))
        if decoded is None:  # not decodable: plain text
            continue
        if pending and between.strip(b" \t") == b"":
            if charset != pending_charset:
                flush()
        else:
            flush()
            out.append(text(between))
        pending.append(decoded)
        pending_charset = charset
        pos = match.end()
    flush()
    out.append(text(raw[pos:]))
    return "".join(out)


# --- writing: a Subject as encoded words ----------------------------------------------

# RFC 2047 section 2: an encoded-word is at most 75 characters; 42 bytes of UTF-8 make 56
# of base64, 68 with "=?utf-8?b?" and "?=", so "Subject: " and the first word still fit
# in 78 (RFC 5322 2.1.1).
_WORD_BYTES = 42


def encode_words(text: str) -> str:
    """`text` as B encoded-words, one per folded line, each holding its own white space:
    `decode_words` gives `text` back whole.

    Python's folder (3.11) may put a run of spaces between two encoded-words as the
    folding white space, and a reader drops white space there (RFC 2047 6.2): "élevée
    hémoglobine" came back as "élevéehémoglobine" (found by Hypothesis). Here every
    character, spaces included, is inside a word, and the words are cut on character
    boundaries (RFC 2047 5(3): a character is never split between words)."""
    words: list[bytes] = []
    chunk = b""
    for character in text:
        encoded = character.encode("utf-8", "surrogatepass")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk:
        words.append(chunk)
    return "\r\n ".join("=?utf-8?b?" + base64.b64encode(word).decode("ascii") + "?=" for word in words)


class _WritingPolicy(email.policy.EmailPolicy):
    """`email.policy.SMTP`, but a Subject with anything beyond printable ASCII is written
    by `encode_words` (free text a doctor typed or a message's subject quoted in a reply),
    not by Python's folder."""

    def fold_binary(self, name: str, value: str) -> bytes:
        text = str(value)
        if name.lower() == "subject" and not (text.isascii() and text.isprintable()):
            return f"{name}: {encode_words(text)}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


# The policy of every message the server writes from text (compose, automatic replies).
SMTP_POLICY = _WritingPolicy(linesep="\r\n")
