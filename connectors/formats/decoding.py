"""Bytes to lines for the text formats (HPRIM Net, HPRIM Santé).

The rule (samples README, formats notes §1): strip a UTF-8 BOM; if the bytes are valid
UTF-8 they are UTF-8, otherwise CP1252 (the Windows superset of the printable
ISO-8859-1 range that French practice software writes). Line ends may be CRLF, LF or
bare CR, even mixed.

Lines are decoded one at a time from the original bytes instead of decoding the whole
file first: a 50 MB lab file then costs its bytes plus the parsed result, not a second
full copy as text (the connector benchmark bounds peak memory at 3x the input).
"""

from __future__ import annotations

import codecs
import gc
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK = BLOCK_SIZE = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")
# The 32 bytes where CP1252 and ISO-8859-1 differ, deleted by bytes.translate.
_C1_BYTES = bytes(range(0x80, 0xA0))


def _cp1252_table() -> dict[int, str]:
    # The five bytes CP1252 leaves undefined (0x81 0x8D 0x8F 0x90 0x9D) keep their
    # ISO-8859-1 meaning (a C1 control) instead of failing the whole file.
    table: dict[int, str] = {}
    for byte in range(0x80, 0xA0):
        try:
            table[byte] = bytes([byte]).decode("cp1252")
        except UnicodeDecodeError:
            table[byte] = chr(byte)
    return table


_CP1252_FROM_LATIN1 = str.maketrans({chr(b): c for b, c in _cp1252_table().items()})


@dataclass(frozen=True, slots=True)
class TextLayout:
    """How a text file is written: what the parser detected, for the record.

    ``encoding`` is ``utf-8`` (valid UTF-8 with non-ASCII bytes), ``cp1252`` (not UTF-8
    and using a byte in 0x80-0x9F, where CP1252 and ISO-8859-1 differ) or
    ``iso-8859-1`` (everything else, ASCII included: the historical HPRIM charset).
    ``line_ending`` is ``CRLF``, ``LF``, ``CR``, ``mixed`` or ``none``.
    """

    encoding: str
    line_ending: str
    start: int  # offset of the first byte after a BOM

    def decode(self, raw: bytes) -> str:
        if self.encoding == "utf-8":
            return raw.decode("utf-8")
        if self.encoding == "iso-8859-1":
            return raw.decode("latin-1")
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1").translate(_CP1252_FROM_LATIN1)


def _is_utf8(data: bytes, start: int) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for offset in range(start, len(data), _CHUNK):
            decoder.decode(data[offset:offset + _CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _has_c1(data: bytes, start: int) -> bool:
    """True when a byte in 0x80-0x9F occurs in ``data[start:]``.

    A 1 MB slice at a time with the C1 bytes deleted (``bytes.translate``): a plain C
    loop, seven times faster than a regex search on a file that has none (the usual
    ISO-8859-1 case, where the whole file is scanned), and never a full copy."""
    for offset in range(start, len(data), _CHUNK):
        chunk = data[offset:offset + _CHUNK]
        if len(chunk.translate(None, _C1_BYTES)) != len(chunk):
            return True
    return False


def _line_ending(data: bytes) -> str:
    crlf = data.count(b"\r\n")
    cr = data.count(b"\r") - crlf
    lf = data.count(b"\n") - crlf
    kinds = [name for name, count in (("CRLF", crlf), ("LF", lf), ("CR", cr)) if count]
    if not kinds:
        return "none"
    return kinds[0] if len(kinds) == 1 else "mixed"


def detect_layout(data: bytes) -> TextLayout:
    """Choose the charset and describe the line ends of ``data`` (no copy of the text)."""
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    if data.isascii():
        encoding = "iso-8859-1"
    elif _is_utf8(data, start):
        encoding = "utf-8"
    elif _has_c1(data, start):
        encoding = "cp1252"
    else:
        encoding = "iso-8859-1"
    return TextLayout(encoding=encoding, line_ending=_line_ending(data), start=start)


def iter_raw_lines(data: bytes, start: int = 0) -> Iterator[bytes]:
    """Physical lines of ``data`` without their line end (CRLF, LF or CR).

    Only CR and LF end a line: form feeds, vertical tabs and U+2028 are content, unlike
    ``str.splitlines``. A final line end does not open an empty last line.
    """
    end = len(data)
    if b"\r" not in data or data.count(b"\r") == data.count(b"\r\n"):
        # LF or CRLF only: the common case, a plain find loop.
        find = data.find
        strip_cr = b"\r" in data
        position = start
        while position < end:
            stop = find(b"\n", position)
            if stop < 0:
                stop = end
            line = data[position:stop]
            yield line[:-1] if strip_cr and line.endswith(b"\r") else line
            position = stop + 1
        return
    position = start
    for match in _LINE_END.finditer(data, start):
        yield data[position:match.start()]
        position = match.end()
    if position < end:
        yield data[position:]


def iter_text_blocks(data: bytes, layout: TextLayout | None = None,
                     block_size: int = _CHUNK,
                     keep_crlf: bool = False) -> Iterator[tuple[int, str]]:
    """(line number of the first line, decoded text) for blocks of about ``block_size``
    bytes cut at line ends: the text is decoded a block at a time, which is several
    times faster than a line at a time and never holds the whole file as text.

    A block always ends just after a line end, so a multi-byte UTF-8 character is never
    cut; CRLF and bare CR become LF, and every line of the text, the last one of the
    file included, ends with exactly one LF (a block is ``"\n".join(lines) + "\n"``).
    A parser can then search a block for what interests it (``str.find``) instead of
    visiting every line.

    ``keep_crlf``: in a CRLF-only file (``line_ending == "CRLF"``) every line ends with
    CRLF instead, as written: a parser that keeps most of the text as it is can then
    convert only what it keeps (replacing CRLF costs a tenth of an HPRIM Net parse).
    """
    layout = layout or detect_layout(data)
    decode = layout.decode
    ending = layout.line_ending
    length = len(data)
    start = layout.start
    number = 1
    while start < length:
        cut = start + block_size
        if cut >= length:
            end = length
        else:
            match = _LINE_END.search(data, cut)
            end = match.end() if match else length
        text = decode(data[start:end])
        if ending == "CRLF":
            if not keep_crlf:
                text = text.replace("\r\n", "\n")
        elif ending in ("CR", "mixed"):
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not text.endswith("\n"):
            # The last line of a file without a final line end.
            text += "\r\n" if keep_crlf and ending == "CRLF" else "\n"
        yield number, text
        number += text.count("\n")
        start = end


def iter_line_blocks(data: bytes, layout: TextLayout | None = None,
                     block_size: int = _CHUNK) -> Iterator[tuple[int, list[str]]]:
    """(line number of the first line, decoded lines) for the blocks of
    ``iter_text_blocks``, each split into its lines."""
    for number, text in iter_text_blocks(data, layout, block_size):
        lines = text.split("\n")
        lines.pop()  # the text ends with a line end, not with an empty line
        yield number, lines


def iter_lines(data: bytes, layout: TextLayout | None = None) -> Iterator[tuple[int, str]]:
    """(1-based physical line number, decoded text) for every line of ``data``."""
    for first, lines in iter_line_blocks(data, layout):
        yield from enumerate(lines, first)


def decode_text(data: bytes) -> str:
    """The whole of ``data`` as text by the same rule (for small inputs and tests)."""
    layout = detect_layout(data)
    return layout.decode(data[layout.start:])


# --- the cyclic collector while a whole file's result is built ---------------------

_pause_lock = threading.Lock()
_pauses = 0
_collector_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a whole file's result is built.

    Such a result is hundreds of thousands of small containers that all stay alive: each
    collection walks every one built so far for nothing (the result holds no cycle), and
    on the bench's 50 MB files that was a quarter of an HPRIM Net parse and nearly half
    of an HPRIM Santé one (`bench/connectors_parse_bench.py`, full mode). Reference
    counting still frees everything at once. The collector is process-wide, so nested
    and concurrent pauses are counted, and it comes back only as it was before the
    first (a process that turned it off keeps it off)."""
    global _pauses, _collector_was_enabled
    with _pause_lock:
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()
