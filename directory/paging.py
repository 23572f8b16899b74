"""RFC 2696 simple paged results control: value codec (sans-IO over bytes).

realSearchControlValue ::= SEQUENCE { size INTEGER (0..maxInt), cookie OCTET STRING }
Our cookie is the keyset position (the last returned address, lowercased, UTF-8): the server
keeps no per-connection state and a page costs one indexed range query.
"""

from __future__ import annotations

from ldaptor.protocols import pureber

PAGED_OID = b"1.2.840.113556.1.4.319"


class PagingError(ValueError):
    """A malformed paged results control value."""


def decode(value: bytes | None) -> tuple[int, bytes]:
    if not value:
        raise PagingError("paged results control without a value")
    try:
        seq, used = pureber.berDecodeObject(pureber.BERDecoderContext(), value)
    except Exception as exc:  # ldaptor raises assorted errors on bad BER
        raise PagingError(f"bad paged results control: {exc}") from exc
    if not isinstance(seq, pureber.BERSequence) or len(seq.data) != 2 or used != len(value):
        raise PagingError("bad paged results control: expected SEQUENCE {size, cookie}")
    size, cookie = seq.data
    if not isinstance(size, pureber.BERInteger) or not isinstance(cookie, pureber.BEROctetString):
        raise PagingError("bad paged results control: expected SEQUENCE {INTEGER, OCTET STRING}")
    if size.value < 0:
        raise PagingError("negative page size")
    return size.value, cookie.value


def encode(size: int, cookie: bytes) -> bytes:
    return pureber.BERSequence([pureber.BERInteger(size), pureber.BEROctetString(cookie)]).toWire()
