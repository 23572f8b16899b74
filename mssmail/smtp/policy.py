"""Who may send what to whom (pure functions: no I/O, no store)."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any, TypeVar

from mssmail.mime import addresses as mime_addresses
from mssmail.mime import headers as mime_headers
from mssmail.smtp import replies


class Route(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"  # another operator of the space of trust
    REFUSED = "refused"


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower() if "@" in address else ""


def classify_recipient(address: str, local_domains: Collection[str], trust_domains: Collection[str]) -> Route:
    domain = domain_of(address)
    if domain in local_domains:
        return Route.LOCAL
    if domain in trust_domains:
        return Route.REMOTE
    return Route.REFUSED


def mx_sender_allowed(sender: str, trust_domains: Collection[str]) -> replies.Reply | None:
    """MX: mail only from the space of trust (None = allowed). The null sender of DSNs
    (RFC 5321 4.5.5) is allowed: bounces must come back."""
    if is_null_sender(sender):
        return None
    if domain_of(sender) in trust_domains:
        return None
    return replies.SENDER_NOT_TRUSTED


def submission_sender_allowed(sender: str, allowed: Collection[str]) -> replies.Reply | None:
    """Submission: an authenticated user sends as itself or a mailbox delegated to it."""
    return None if sender.lower() in {a.lower() for a in allowed} else replies.SENDER_NOT_OWNED


def from_header_addresses(raw_header_values: list[str]) -> list[str]:
    return [addr.lower() for _name, addr in getaddresses(raw_header_values) if addr]


# --- the MX: who may claim which sender (issue 12, hole 3) -------------------------------
NULL_SENDERS = ("", "<>")


def is_null_sender(address: str) -> bool:
    """The null reverse-path of bounces and delivery reports (RFC 5321 4.5.5, 3.6.3):
    aiosmtpd hands `MAIL FROM:<>` over as "<>"."""
    return address.strip() in NULL_SENDERS


def postmaster_alias(address: str, domain: str) -> str:
    """RFC 5321 4.5.1: `RCPT TO:<Postmaster>` without a domain (any case) must be
    accepted; it means the postmaster of this server's primary domain."""
    return f"postmaster@{domain.lower()}" if address.strip().lower() == "postmaster" else address


def mx_local_sender_refused(sender: str, local_domains: Collection[str]) -> replies.Reply | None:
    """Mail claiming one of our own domains comes through submission, authenticated:
    on the MX anybody can type `MAIL FROM:<our doctor>` (None = not refused)."""
    if domain_of(sender) in local_domains:
        return replies.LOCAL_SENDER_ON_MX
    return None


def certificate_names(peer_certificate: dict[str, Any] | None) -> list[str]:
    """DNS names of a verified peer certificate (subjectAltName, RFC 6125 6.4.4: the
    CN only when there is no DNS name), lowercased."""
    if not peer_certificate:
        return []
    names = [value.lower().rstrip(".") for kind, value in peer_certificate.get("subjectAltName", ())
             if kind == "DNS"]
    if names:
        return names
    for rdn in peer_certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value).lower().rstrip("."))
    return names


def certificate_covers(peer_certificate: dict[str, Any] | None, domain: str) -> bool:
    """Whether the operator presenting this certificate answers for `domain`: a DNS name
    equal to it, or a host inside it (mx.b.example for b.example). Wildcards are not
    taken: a certificate for *.example must not speak for every domain under it."""
    domain = domain.lower().rstrip(".")
    return any(name == domain or name.endswith("." + domain)
               for name in certificate_names(peer_certificate) if not name.startswith("*"))


def mx_trust_sender_refused(sender: str, peer_certificate: dict[str, Any] | None,
                            require_client_cert: bool) -> replies.Reply | None:
    """With mutual TLS ([trust] require_client_cert), a sender of the space of trust
    must be one the peer's certificate answers for: operator B cannot send as C."""
    if not require_client_cert or is_null_sender(sender):
        return None
    if not certificate_covers(peer_certificate, domain_of(sender)):
        return replies.SENDER_NOT_CERTIFIED
    return None


def header_senders_refused(addresses: list[str], local_domains: Collection[str], trust_domains: Collection[str],
                           peer_certificate: dict[str, Any] | None, require_client_cert: bool,
                           ) -> replies.Reply | None:
    """The MX's look at From/Sender (what a reader shows): no local domain (that is
    submission's), only the space of trust, and with mutual TLS only domains the peer
    certificate answers for."""
    for address in addresses:
        domain = domain_of(address)
        if domain in local_domains:
            return replies.LOCAL_FROM_ON_MX
        if domain not in trust_domains:
            return replies.FROM_NOT_TRUSTED
        if require_client_cert and not certificate_covers(peer_certificate, domain):
            return replies.FROM_NOT_CERTIFIED
    return None


# --- Authentication-Results of the sender (RFC 8601, hole 3) ---------------------------
def _ar_value(text: str) -> str:
    """A value usable as an RFC 8601 pvalue: without CR, LF, ";" or anything a reader
    could take for structure, quoted when it is not a plain token."""
    cleaned = "".join(c for c in text if c.isprintable() and c not in '\r\n;"\\()')[:200]
    if cleaned and all(c.isalnum() or c in "@.-_+=" for c in cleaned):
        return cleaned
    return f'"{cleaned}"'


def sender_authentication(authserv_id: str, *, login: str | None = None,
                          peer_certificate: dict[str, Any] | None = None) -> bytes:
    """The Authentication-Results field saying how the sender was authenticated:
    `auth=pass smtp.auth=<login>` after SMTP AUTH (RFC 8601 2.7.4); the verified client
    certificate under mutual TLS (`x-tls`, a local method: RFC 8601 has none for TLS
    client certificates); `none` otherwise (2.2: no method ran)."""
    if login:
        result = f"auth=pass smtp.auth={_ar_value(login)}"
    elif peer_certificate:
        names = certificate_names(peer_certificate)
        issuer = ",".join(f"{k}={v}" for rdn in peer_certificate.get("issuer", ()) for k, v in rdn)
        result = (f"x-tls=pass smtp.x-client-cert={_ar_value(names[0] if names else 'unnamed')}"
                  f" (client certificate issued by {_ar_value(issuer).strip(chr(34))})")
    else:
        result = "none"
    return f"Authentication-Results: {authserv_id}; {result}\r\n".encode("utf-8", "replace")


# --- submission: the header block as a reader sees it (hole 4) -------------------------
# Defect names of mssmail.mime.headers (the one header-block parser), re-exported.
BARE_CR, BARE_LF, NO_BODY, ENVELOPE_LINE = (mime_headers.BARE_CR, mime_headers.BARE_LF, mime_headers.NO_BODY,
                                            mime_headers.ENVELOPE_LINE)
NOT_A_FIELD, LEADING_CONTINUATION = mime_headers.NOT_A_FIELD, mime_headers.LEADING_CONTINUATION
SPACE_BEFORE_COLON, BAD_FIELD_NAME = mime_headers.SPACE_BEFORE_COLON, mime_headers.BAD_FIELD_NAME
NUL, LONG_LINE = mime_headers.NUL, mime_headers.LONG_LINE
# What every reader agrees on anyway; anything else, one of them may read differently.
HARMLESS_DEFECTS = frozenset({NO_BODY, LONG_LINE})
AUTHOR_FIELDS = ("from", "sender", "reply-to")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>\"(),;:@]+@[^\s<>\"(),;:@]+")


@dataclass
class HeaderBlock:
    """A header block read once for the whole submission policy: the fields as
    (lowercased name, unfolded value octets), and what a reader could read otherwise."""

    fields: list[tuple[str, bytes]] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    def values(self, name: str) -> list[bytes]:
        return [value for key, value in self.fields if key == name]


def read_header_block(raw: bytes) -> HeaderBlock:
    """The whole header block of `raw` (no size cut: a From after 256 KB of headers is
    still a From), read by mssmail.mime.headers: the reader IMAP and crypto use too."""
    parsed = mime_headers.parse(raw)
    return HeaderBlock([(f.key, f.unfolded) for f in parsed.fields], list(parsed.defects))


# The two address readers are pure functions of the field's text, and a sender's From:
# is the same in each of its messages: their answers are kept for short values (a
# hostile 200 KB field is read each time, never kept). Copies are handed out, so a
# caller cannot change what the next message is checked against.
CACHED_VALUE_MAX = 512
_CACHE_ENTRIES = 1024
_Found = tuple[list[tuple[str, str]], list[str]]
_AnyStr = TypeVar("_AnyStr", str, bytes)


def _kept_for_short_values(read: Callable[[_AnyStr], _Found]) -> Callable[[_AnyStr], _Found]:
    """`read` with its answers kept for values of at most CACHED_VALUE_MAX characters,
    stored as tuples and handed out as new lists."""

    @functools.lru_cache(maxsize=_CACHE_ENTRIES)
    def kept(value: _AnyStr) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
        found, defects = read(value)
        return tuple(found), tuple(defects)

    @functools.wraps(read)
    def lookup(value: _AnyStr) -> _Found:
        if len(value) > CACHED_VALUE_MAX:
            return read(value)
        found, defects = kept(value)
        return list(found), list(defects)

    return lookup


@_kept_for_short_values
def read_addresses(value: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """(display name, address) of each mailbox of an address list, and the defects: by
    mssmail.mime.addresses when present, else by the email package's RFC 5322 parser,
    cross-checked against its older getaddresses (where the two disagree, so may readers)."""
    parsed = mime_addresses.parse(value)
    found = [(mime_headers.decode_words(m.name or ""), m.address.lower()) for m in parsed.mailboxes]
    return found, list(parsed.defects)


@_kept_for_short_values
def _read_addresses(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    import email.policy

    defects: list[str] = []
    try:
        header = email.policy.default.header_factory("from", text)
        found = [(a.display_name or "", a.addr_spec.lower()) for a in header.addresses]
        defects.extend(type(d).__name__ for d in header.defects)
    except Exception:  # the email package raises on some malformed input: then it is
        return [], ["unparseable address list"]
    older = sorted(addr.lower() for _name, addr in getaddresses([text]) if addr)
    if older != sorted(a for _n, a in found):
        defects.append("address readers disagree")
    return found, defects


def read_authors(raw: bytes, block: HeaderBlock | None = None) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """(field name -> [(display name, address)], defects) for From, Sender and Reply-To.

    Each address list is read twice, by the server's reader (mssmail.mime.addresses, the
    one ENVELOPE shows) and by the email package's RFC 5322 parser (what many clients
    use, with encoded words decoded in display names); where they disagree, so may
    readers, and that is a defect. Encoded words inside an address are one too (RFC
    2047 5: never valid there, only a display trick). `block`: `read_header_block(raw)`
    when the caller has it already."""
    if block is None:
        block = read_header_block(raw)
    defects = list(block.defects)
    blank = raw.find(b"\n\n")
    if BARE_LF in defects and b"\r" not in raw[: blank if blank >= 0 else len(raw)]:
        # Every line of the block ends with a bare LF: software that writes LF line ends
        # is common, and every reader that accepts them splits this block as the check
        # does. Mixing LF and CRLF is what lets readers disagree; that stays refused.
        defects.remove(BARE_LF)
    found: dict[str, list[tuple[str, str]]] = {}
    for name in AUTHOR_FIELDS:
        values = block.values(name)
        if len(values) > 1:
            defects.append(f"more than one {name} field")
        entries: list[tuple[str, str]] = []
        for value in values:
            ours, our_defects = read_addresses(value)
            theirs, their_defects = _read_addresses(value.decode("utf-8", "replace"))
            defects += our_defects + their_defects
            if not ours:
                defects.append(f"{name}: no mailbox")
            if sorted(a for _n, a in ours) != sorted(a for _n, a in theirs):
                defects.append("address readers disagree")
            if any("=?" in a for _n, a in ours + theirs):
                defects.append(f"{name}: encoded word in an address")
            entries += ours + theirs
        found[name] = entries
    return found, defects


def submission_headers_refused(raw: bytes, allowed: Collection[str],
                               block: HeaderBlock | None = None) -> replies.Reply | None:
    """Submission: From, Sender and Reply-To must name only mailboxes the user may send
    as (their own, or delegated with full rights), read as a reader will read them, in
    the whole header block; a block a reader might read otherwise is refused, as are
    display names that carry an address other than an allowed one. A missing From is
    not refused: the submission adds the envelope sender's. None = accepted."""
    allowed_set = {a.lower() for a in allowed}
    found, defects = read_authors(raw, block)
    if any(d.startswith("more than one") for d in defects):
        return replies.HEADER_REPEATED
    if set(defects) - HARMLESS_DEFECTS:
        return replies.HEADER_AMBIGUOUS
    for name in AUTHOR_FIELDS:
        for display, address in found[name]:
            named = {a.lower() for a in _ADDRESS_IN_TEXT.findall(display)}
            if address.lower() not in allowed_set or not named <= allowed_set:
                return replies.FROM_HEADER_NOT_OWNED if name == "from" else replies.SENDER_HEADER_NOT_OWNED
    return None
