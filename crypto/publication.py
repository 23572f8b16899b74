"""Certificates in the directory: publish ours, find a recipient's.

As in the national directory, each mailbox entry carries its signature and encryption
certificates (`userCertificate;binary`), so that a sender can encrypt to a professional
of another operator it never exchanged with: the certificate comes from the directory
(filled by `mss directory sync`, an LDIF or national import, or our own PKI), and is used
only if its path leads to a trust anchor, it is valid now, allows encryption and is not
revoked (RFC 8550 section 4). A revoked certificate of ours is withdrawn from the entry.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from types import ModuleType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crypto import chain
from crypto.keystore import KeyStore
from crypto.smime import Trust

log = logging.getLogger(__name__)

PUBLISHED_USAGES = ("signature", "encryption")


def _directory() -> ModuleType | None:
    """directory.api when the directory is installed (crypto works without it)."""
    try:
        return importlib.import_module("directory.api")
    except ModuleNotFoundError:
        return None


def publish(store: Any, address: str, usage: str, cert: x509.Certificate) -> bool:
    """Publish one of our certificates on the directory entry of `address`.

    False when there is nothing to publish to (no directory, no entry, a TLS certificate)."""
    api = _directory()
    if api is None or store is None or usage not in PUBLISHED_USAGES:
        return False
    not_after = cert.not_valid_after_utc.replace(tzinfo=None)
    return bool(api.publish_certificate(store, address, usage, cert.public_bytes(Encoding.DER),
                                        not_after))


def withdraw(store: Any, ks: KeyStore, serials: list[str]) -> int:
    """Remove the certificates with these serials (hex, as the key store names them)."""
    api = _directory()
    if api is None or store is None or not serials:
        return 0
    wanted = {s.lower().lstrip("0") or "0" for s in serials}
    digests = []
    for entry in (ks.find_by_serial(s) for s in serials):
        if entry is None:
            continue
        for usage in PUBLISHED_USAGES:
            for der in api.certificates_for(store, entry["address"], usage):
                try:
                    serial = format(x509.load_der_x509_certificate(der).serial_number, "x")
                except ValueError:
                    continue
                if serial in wanted:
                    digests.append(hashlib.sha256(der).hexdigest())
    return int(api.withdraw_certificates(store, sorted(set(digests))))


def usable_encryption_certificate(candidates: list[x509.Certificate], trust: Trust,
                                  intermediates: list[x509.Certificate] | None = None,
                                  ) -> tuple[x509.Certificate | None, str]:
    """The candidate to encrypt to (the one valid longest), or None and why none is usable."""
    reasons = []
    valid = []
    for cert in candidates:
        result = chain.validate(cert, intermediates or [], trust.anchors, trust.crls,
                                usage="encryption", at=trust.at)
        if result.ok:
            valid.append(cert)
        else:
            reasons.append(result.detail)
    if valid:
        return max(valid, key=lambda c: c.not_valid_after_utc), ""
    return None, "; ".join(reasons) or "no encryption certificate"


def directory_certificates(store: Any, address: str) -> list[x509.Certificate]:
    """The encryption certificates the directory publishes for `address` (unparsable ones skipped)."""
    api = _directory()
    if api is None or store is None:
        return []
    certs = []
    for der in api.certificates_for(store, address, "encryption"):
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError:
            log.warning("unparsable certificate published for %s skipped", address)
    return certs


def find_encryption_certificate(ks: KeyStore, trust: Trust, address: str,
                                store: Any = None) -> tuple[x509.Certificate | None, str]:
    """The certificate to encrypt to for `address`: our PKI's, else the directory's."""
    own = ks.get(address, "encryption")
    candidates = [own.certificate] if own is not None else []
    intermediates = list(own.chain) if own is not None else []
    try:
        candidates += [c for c in directory_certificates(store, address) if c not in candidates]
    except Exception:  # the directory being unreachable must not crash submission
        log.exception("directory certificate lookup failed for %s", address)
    if not candidates:
        return None, "no encryption certificate"
    return usable_encryption_certificate(candidates, trust, intermediates)
