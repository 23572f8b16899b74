"""Encoding server data (RFC 3501 section 4): atoms, strings, NIL, lists.

A string goes out quoted when it is short 7-bit text without CR/LF, as a literal
otherwise; `None` is NIL; ints are numbers; lists are parenthesised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

QUOTED_MAX = 1024


class Atom(bytes):
    """Sent as is (flags, keywords, NIL-free atoms)."""


def string(value: bytes | str | None) -> bytes:
    """nstring: NIL, "quoted" or {n}CRLF literal."""
    if value is None:
        return b"NIL"
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if len(data) <= QUOTED_MAX and all(0x20 <= c < 0x7F for c in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def astring(value: bytes | str) -> bytes:
    """An atom when possible (mailbox names in LIST look nicer), a string otherwise."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if data and data.upper() != b"NIL" and all(
            0x21 <= c < 0x7F and c not in b'(){%*"\\]' for c in data):
        return data
    return string(data)


def encode(value: Any) -> bytes:
    """Nested lists of bytes/str (strings), int, None (NIL), Atom."""
    if value is None:
        return b"NIL"
    if isinstance(value, Atom):
        return bytes(value)
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, bytes | str):
        return string(value)
    if isinstance(value, list | tuple):
        return b"(" + b" ".join(encode(v) for v in value) + b")"
    raise TypeError(f"cannot encode {type(value).__name__}")


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(flags).encode("ascii", "replace") + b")"
