"""Content-Type and Content-Disposition: the value and its parameters (sans-IO).

RFC 2045 5.1 (`type "/" subtype *(";" parameter)`, values a token or a quoted-string,
comments allowed between tokens, RFC 5322 3.2.2), RFC 2183 2 (Content-Disposition), and
RFC 2231 (continuations `name*0`, `name*1`, ...; charset and language `name*=utf-8'fr'%C3%A9`).

The value is unfolded first (RFC 5322 2.2.3): `boundary="foo<CRLF> bar"` is the boundary
`foo bar`, which is what the delimiter lines of such a message say. Real mail bends the
grammar: an unquoted value with spaces or a "=" in it (`name=compte rendu.pdf`,
`boundary==_x`) is read up to the next ";", as every common reader does; what cannot be
read is reported in `defects` and skipped. Never raises.
"""

from __future__ import annotations

import codecs
import re
import urllib.parse
from dataclasses import dataclass, field

from mssmail.mime.headers import unfold

# Defects
UNTERMINATED_QUOTE = "unterminated quoted-string"
UNTERMINATED_COMMENT = "unterminated comment"
NO_VALUE = "parameter without value"
DUPLICATE = "duplicate parameter"
BAD_CONTINUATION = "RFC 2231 continuation gap"
JUNK_AFTER_VALUE = "text after quoted value"

# RFC 2045 5.1: token := 1*<any CHAR except SPACE, CTLs, or tspecials>
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_MEDIA = re.compile(rf"({_TOKEN})/({_TOKEN})")
# The usual value: tokens and plain quoted strings, no comment, no escape, no RFC 2231.
_SIMPLE = re.compile(rf'[ \t]*({_TOKEN}(?:/{_TOKEN})?)[ \t]*((?:;[ \t]*[!#$%&\'+\-.0-9A-Z^_`a-z{{|}}~]+='
                     rf'(?:{_TOKEN}|"[^"\\\r\n]*")[ \t]*)*);?[ \t]*')
_SIMPLE_PARAM = re.compile(rf'([!#$%&\'+\-.0-9A-Z^_`a-z{{|}}~]+)=(?:({_TOKEN})|"([^"\\\r\n]*)")')
# RFC 2231 7: attribute-char, what may stay unescaped in an extended value.
_ATTRIBUTE_SAFE = "!#$&+-.^_`|~" + "".join(chr(c) for c in range(0x30, 0x3A)) + \
    "".join(chr(c) for c in range(0x41, 0x5B)) + "".join(chr(c) for c in range(0x61, 0x7B))


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter, continuations joined and RFC 2231 octets decoded.

    `charset` is set for an RFC 2231 extended value (`name*=charset'lang'...`): `value`
    is then the decoded text and `encoded()` gives the value as RFC 2231 writes it, which
    is what IMAP's BODYSTRUCTURE shows (RFC 3501 leaves the decoding to the client).
    """

    name: str
    value: str
    charset: str | None = None
    language: str | None = None

    def encoded(self) -> str:
        """`charset'language'%XX...` (RFC 2231 4) for an extended value, else the value."""
        if self.charset is None:
            return self.value
        try:
            octets = self.value.encode(self.charset, "surrogateescape")
        except (LookupError, ValueError):  # UnicodeError is a ValueError
            octets = self.value.encode("utf-8", "surrogateescape")
        return f"{self.charset}'{self.language or ''}'" + urllib.parse.quote(octets, safe=_ATTRIBUTE_SAFE)


@dataclass(slots=True)
class Structured:
    """`value; name=value; ...`: the value as written (lower case) and its parameters."""

    value: str
    params: list[Param] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        wanted = name.lower()
        for param in self.params:
            if param.name == wanted:
                return param.value
        return None

    def media_type(self, default: str = "text/plain") -> str:
        """The value as a Content-Type: `type/subtype`, else `default` (RFC 2045 5.2)."""
        return self.value if _MEDIA.fullmatch(self.value) else default

    def find(self, name: str) -> Param | None:
        wanted = name.lower()
        return next((p for p in self.params if p.name == wanted), None)


def _text(value: bytes) -> str:
    # surrogateescape: 8-bit octets (RFC 6532 UTF-8, or worse) come back byte for byte.
    return value.decode("utf-8", "surrogateescape")


def leading_value(value: bytes | None) -> str:
    """`parse_structured(value).value` without reading the parameters: the lower-case
    text before the first ";", comments removed (the cheap question the summary asks of
    every part: is it multipart, is it an attachment)."""
    if value is None:
        return ""
    head = value.partition(b";")[0]
    if b"(" not in head and b"\n" not in head and head.isascii():  # the usual case, in C
        return head.strip(b" \t\r\n").lower().decode("ascii")
    text = _text(unfold(value))
    head_text = text.partition(";")[0]
    if "(" not in head_text:
        return head_text.strip(" \t\r\n").lower()
    return _until_semicolon(text, 0, [])[0].strip(" \t\r\n").lower()


_MEDIA_CACHE: dict[bytes, str | None] = {}
_MEDIA_CACHE_MAX = 4096  # distinct Content-Type values remembered (then forgotten at once)


def media_type(value: bytes | None, default: str = "text/plain") -> str:
    """type/subtype in lower case; missing or not `token/token` gives `default` (RFC 2045 5.2).

    Remembered per value: mail repeats a few hundred Content-Type values endlessly, and
    the summary asks this of every part of every message delivered."""
    if value is None:
        return default
    known = _MEDIA_CACHE.get(value, default)
    if known is not default:
        return default if known is None else known
    head = leading_value(value)
    result = head if _MEDIA.fullmatch(head) else None
    if len(value) <= 256:  # a hostile megabyte-long value is not kept
        if len(_MEDIA_CACHE) >= _MEDIA_CACHE_MAX:
            _MEDIA_CACHE.clear()
        _MEDIA_CACHE[value] = result
    return default if result is None else result


def parse_structured(value: bytes | None) -> Structured:
    """The value and parameters of a Content-Type or Content-Disposition field value."""
    if value is None:
        return Structured("")
    text = _text(unfold(value))
    simple = _SIMPLE.fullmatch(text)
    if simple is not None:
        params: list[Param] = []
        seen: set[str] = set()
        out = Structured(simple.group(1).lower(), params)
        for name, token, quoted in _SIMPLE_PARAM.findall(simple.group(2)):
            key = name.lower()
            if key in seen:
                out.defects.append(DUPLICATE)
                continue
            seen.add(key)
            params.append(Param(key, token or quoted))
        return out
    return _parse_slow(text)


def _skip_comment(text: str, pos: int, defects: list[str]) -> int:
    """Past a comment starting at text[pos] == "(" (nested, with quoted pairs, RFC 5322 3.2.2)."""
    depth = 0
    size = len(text)
    while pos < size:
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    defects.append(UNTERMINATED_COMMENT)
    return size


def _strip_comments(text: str) -> str:
    if "(" not in text:
        return text
    out, pos, quoted = [], 0, False
    ignored: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == '"':
            quoted = not quoted
        elif char == "\\" and quoted:
            out.append(text[pos:pos + 2])
            pos += 2
            continue
        elif char == "(" and not quoted:
            pos = _skip_comment(text, pos, ignored)
            out.append(" ")
            continue
        out.append(char)
        pos += 1
    return "".join(out)


def _quoted(text: str, pos: int, defects: list[str]) -> tuple[str, int]:
    """(content, position after) of the quoted-string at text[pos] == '"' (RFC 5322 3.2.4)."""
    out = []
    pos += 1
    size = len(text)
    while pos < size:
        char = text[pos]
        if char == "\\" and pos + 1 < size:
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    defects.append(UNTERMINATED_QUOTE)
    return "".join(out), size


def _until_semicolon(text: str, pos: int, defects: list[str]) -> tuple[str, int]:
    """An unquoted run up to the next ";" outside comments, comments removed, trimmed."""
    out = []
    size = len(text)
    while pos < size:
        char = text[pos]
        if char == ";":
            break
        if char == "(":
            pos = _skip_comment(text, pos, defects)
            out.append(" ")
            continue
        out.append(char)
        pos += 1
    return "".join(out).strip(" \t\r\n"), pos


def _parse_slow(text: str) -> Structured:
    defects: list[str] = []
    value, pos = _until_semicolon(text, 0, defects)
    value = value.strip(" \t\r\n").lower()
    raw: list[tuple[str, str, bool]] = []  # (name as written, value, was quoted)
    size = len(text)
    while pos < size:
        pos += 1  # the ";"
        name, at = [], pos
        while at < size and text[at] not in "=;":
            if text[at] == "(":
                at = _skip_comment(text, at, defects)
                continue
            name.append(text[at])
            at += 1
        key = "".join(name).strip(" \t\r\n")
        if at >= size or text[at] == ";":
            if key:
                defects.append(NO_VALUE)
            pos = at
            continue
        at += 1  # the "="
        while at < size and text[at] in " \t\r\n":
            at += 1
        while at < size and text[at] == "(":
            at = _skip_comment(text, at, defects)
            while at < size and text[at] in " \t\r\n":
                at += 1
        if at < size and text[at] == '"':
            val, at = _quoted(text, at, defects)
            rest, at = _until_semicolon(text, at, defects)
            if rest:
                defects.append(JUNK_AFTER_VALUE)
            quoted = True
        else:
            val, at = _until_semicolon(text, at, defects)
            quoted = False
        if key:
            raw.append((key, val, quoted))
        pos = at
    return Structured(value, _join(raw, defects), defects)


def _charset_name(name: str) -> str | None:
    """The charset if Python knows it as a text encoding (not base64, rot13...), else None."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    return name.lower() if getattr(info, "_is_text_encoding", True) else None


_STARRED = re.compile(r"(.+?)(?:\*(\d{1,3}))?(\*)?")


def _join(raw: list[tuple[str, str, bool]], defects: list[str]) -> list[Param]:
    """RFC 2231 3-4: sections of one name joined in order, extended ones percent-decoded.

    `name*` is one extended section, `name*N` a plain section, `name*N*` an extended one;
    the first occurrence of a name (or of a section) wins, as in the email package."""
    plain: dict[str, Param] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    order: list[str] = []
    for name, value, _quoted in raw:
        key = name.lower()
        match = _STARRED.fullmatch(key) if "*" in key else None
        if match is None or (match.group(2) is None and match.group(3) is None):
            if key in plain:
                defects.append(DUPLICATE)
                continue
            plain[key] = Param(key, value)
        else:
            base = match.group(1)
            number = int(match.group(2)) if match.group(2) is not None else 0
            chunks = sections.setdefault(base, {})
            if number in chunks:
                defects.append(DUPLICATE)
                continue
            chunks[number] = (value, match.group(3) is not None)
            key = base
        if key not in order:
            order.append(key)
    out: list[Param] = []
    for key in order:
        if key in sections:
            if key in plain:
                defects.append(DUPLICATE)  # both forms: the RFC 2231 one carries more
            out.append(_decode_sections(key, sections[key], defects))
        else:
            out.append(plain[key])
    return out


def _decode_sections(base: str, chunks: dict[int, tuple[str, bool]], defects: list[str]) -> Param:
    """RFC 2231 4.1: the charset and language lead the first section when it is extended."""
    numbers = sorted(chunks)
    if numbers != list(range(len(numbers))):
        defects.append(BAD_CONTINUATION)
    charset = language = None
    octets = bytearray()
    for index, number in enumerate(numbers):
        value, extended = chunks[number]
        if index == 0 and extended and value.count("'") >= 2:
            charset_text, language_text, value = value.split("'", 2)
            charset = _charset_name(charset_text) if charset_text else None
            if charset is None:
                charset = "us-ascii" if not charset_text else None
            language = language_text or None
        if extended:
            octets += urllib.parse.unquote_to_bytes(value.encode("utf-8", "surrogateescape"))
        else:
            octets += value.encode("utf-8", "surrogateescape")
    try:
        text = bytes(octets).decode(charset or "utf-8", "surrogateescape")
    except (LookupError, ValueError):
        text = bytes(octets).decode("utf-8", "surrogateescape")
    return Param(base, text, charset, language)
