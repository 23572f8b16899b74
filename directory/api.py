"""What the rest of the server asks the directory (SMTP, crypto, webmail).

All lookups are indexed queries; the unlisted flag hides entries from autocomplete only
(an unlisted mailbox still receives mail and still has its certificates found by address).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sqlalchemy import select

from directory import store as dstore
from directory.filters import Or, Substrings
from directory.models import DirCertificate, DirMailbox

AUTOCOMPLETE_ATTRS = ("sn", "givenName", "mail", "rppsId", "o", "l")


def is_known_recipient(store: Any, address: str) -> bool:
    """SMTP: is `address` a mailbox of the space of trust listed in the directory."""
    return dstore.is_known_recipient(store, address)


def add_certificate(store: Any, address: str, usage: str, der: bytes) -> None:
    if usage not in ("signature", "encryption"):
        raise ValueError("certificate usage must be 'signature' or 'encryption'")
    with store.db.write() as s:
        mid = s.scalar(select(DirMailbox.id).where(DirMailbox.address_lc == address.lower()))
        if mid is None:
            raise ValueError(f"no directory entry for {address}")
        s.add(DirCertificate(mailbox_id=mid, usage=usage, der=der, sha256=hashlib.sha256(der).hexdigest()))


def certificates_for(store: Any, address: str, usage: str = "encryption") -> list[bytes]:
    """Crypto: the DER certificates (userCertificate;binary) of `address` for `usage`."""
    with store.db.read() as s:
        q = (select(DirCertificate.der).join(DirMailbox, DirCertificate.mailbox_id == DirMailbox.id)
             .where(DirMailbox.address_lc == address.lower(), DirCertificate.usage == usage)
             .order_by(DirCertificate.id))
        return list(s.scalars(q))


def autocomplete(store: Any, prefix: str, limit: int = 20) -> list[dstore.Entry]:
    """Webmail: listed entries whose name, given name, mail, RPPS, structure or city starts with
    `prefix` (each an indexed prefix range)."""
    prefix = prefix.strip()
    if not prefix:
        return []
    node = Or(tuple(Substrings(a, prefix, (), None) for a in AUTOCOMPLETE_ATTRS))
    return dstore.search(store, node, limit=limit)


MAX_SUGGESTION_QUERY = 64


def suggest(store: Any, query: str, limit: int = 20) -> list[dstore.Entry]:
    """Webmail "À"/"Cc"/"Cci": listed entries for what the doctor is typing (at most
    `MAX_SUGGESTION_QUERY` characters are used). One word is an indexed prefix search
    (`autocomplete`: name, given name, mail, RPPS, structure, city); several words
    ("durand lyon", "hélène cardio") the free-text search (`search_text`: every word
    found, accents and case ignored), a scan bounded by `limit`."""
    query = " ".join(query[:MAX_SUGGESTION_QUERY].split())
    if len(query) < 2:
        return []
    if " " not in query:
        return autocomplete(store, query, limit=limit)
    return dstore.search_text(store, query, limit=limit)


def publish_certificate(store: Any, address: str, usage: str, der: bytes,
                        not_after: Any = None) -> bool:
    """Publish a certificate on the entry of `address`; False when the directory has no entry.

    Publishing the same certificate twice is a no-op (certificates are keyed by SHA-256)."""
    if usage not in ("signature", "encryption"):
        raise ValueError("certificate usage must be 'signature' or 'encryption'")
    digest = hashlib.sha256(der).hexdigest()
    with store.db.write() as s:
        mid = s.scalar(select(DirMailbox.id).where(DirMailbox.address_lc == address.lower()))
        if mid is None:
            return False
        if s.scalar(select(DirCertificate.id).where(DirCertificate.sha256 == digest)) is None:
            s.add(DirCertificate(mailbox_id=mid, usage=usage, der=der, sha256=digest,
                                 not_after=not_after))
        return True


def withdraw_certificates(store: Any, digests: list[str]) -> int:
    """Remove published certificates by SHA-256 (a revoked certificate leaves the directory)."""
    if not digests:
        return 0
    with store.db.write() as s:
        rows = list(s.scalars(select(DirCertificate).where(DirCertificate.sha256.in_(digests))))
        for row in rows:
            s.delete(row)
        return len(rows)



def ldap_view(store: Any, entries: list[dstore.Entry], base_dn: str, *,
              privileged: bool = True) -> list[dict[str, Any]]:
    """Entries as the LDAP server publishes them, for `mss directory search/show --json`:
    {"dn": ..., attribute name: [values]}, binary values (certificates) in base64 as in LDIF."""
    from directory.server import attribute_plan

    fields, getters, _ = attribute_plan((), privileged)
    engine = store.db.engine
    raw = engine.raw_connection()  # the LDAP server's own query, on a driver connection
    try:
        certs = dstore.fetch_certificates(raw, engine.dialect.name, [e.address for e in entries])
    finally:
        raw.close()
    out = []
    for e in entries:
        row = (*(getattr(e, f) for f in fields), certs.get(e.address.lower(), ()))
        view: dict[str, Any] = {"dn": f"mail={e.address},ou=mailboxes,{base_dn}"}
        for name, get in getters:
            value = get(row)
            if value:
                values = [value] if isinstance(value, str) else list(value)
                view[name] = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in values]
        out.append(view)
    return out
