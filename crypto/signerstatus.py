"""Whether one of our own certificates may still be used: never sign with a revoked or
expired certificate (issue #12, hole 13).

A signature made with a revoked certificate is worse than none: the recipient's client
shows `smime=policy` beside a message that looks signed, and a reader learns to ignore
the warning. So the signing path asks `unusable_reason` first and, per
`[crypto] unusable_signer`, refuses the message or sends it unsigned, saying so; `mss
check` reports the certificates in use that are revoked, expired or about to expire.

Revocation is what this PKI recorded (`mss cert revoke`, revoked.json) and what any CRL
we hold says (our CA's `crl.pem`, imported CRLs of other CAs: RFC 5280 section 6.3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509

from crypto.keystore import KeyStore

EXPIRY_WARNING = dt.timedelta(days=30)


def serial_of(cert: x509.Certificate) -> str:
    """The serial as `mss cert list` shows it and `mss cert revoke` accepts it."""
    return format(cert.serial_number, "x")


def revoked_serials(ks: KeyStore) -> set[str]:
    return {e["serial"] for e in ks.index() if e.get("revoked")}


def _revoked_by_crl(ks: KeyStore, cert: x509.Certificate) -> bool:
    for crl in ks.crls():
        if crl.issuer == cert.issuer and crl.get_revoked_certificate_by_serial_number(cert.serial_number):
            return True
    return False


def unusable_reason(ks: KeyStore, cert: x509.Certificate, now: dt.datetime | None = None) -> str | None:
    """"revoked", "expired", "not yet valid", or None when the certificate may sign."""
    now = now or dt.datetime.now(dt.UTC)
    if serial_of(cert) in revoked_serials(ks) or _revoked_by_crl(ks, cert):
        return "revoked"
    if now > cert.not_valid_after_utc:
        return "expired"
    if now < cert.not_valid_before_utc:
        return "not yet valid"
    return None


@dataclass(frozen=True)
class InUse:
    address: str
    usage: str
    serial: str
    not_after: dt.datetime
    problem: str | None  # revoked | expired | not yet valid | None
    days_left: int


def certificates_in_use(ks: KeyStore, now: dt.datetime | None = None) -> Iterator[InUse]:
    """The certificate each (address, usage) currently holds, with its state: what the
    server would sign, decrypt or present with (older entries of the index are not)."""
    now = now or dt.datetime.now(dt.UTC)
    seen: set[tuple[str, str]] = set()
    for entry in ks.index():
        slot = (entry["address"], entry["usage"])
        if slot in seen:
            continue
        seen.add(slot)
        cred = ks.get(*slot)
        if cred is None:
            continue
        cert = cred.certificate
        left = cert.not_valid_after_utc - now
        yield InUse(slot[0], slot[1], serial_of(cert), cert.not_valid_after_utc,
                    unusable_reason(ks, cert, now), left.days)
