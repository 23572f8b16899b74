"""TLS contexts for listeners and for relaying between operators (mutual TLS)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mssmail.config import Config


def _load_anchors(context: ssl.SSLContext, config: Config) -> int:
    loaded = 0
    for name in config.trust.ca_files:
        path = config.path(name)
        if Path(path).exists():
            context.load_verify_locations(cafile=str(path))
            loaded += 1
    return loaded


def server_context(config: Config, *, request_client_cert: bool = False) -> ssl.SSLContext:
    """Listener context; asks for (and checks) a client certificate when told to.

    With `request_client_cert` the handshake accepts clients without one (CERT_OPTIONAL)
    so that the SMTP layer can refuse them with a proper reply instead of a TLS alert.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.path(config.server.tls_cert)), str(config.path(config.server.tls_key)))
    if request_client_cert and _load_anchors(context, config):
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(config: Config) -> ssl.SSLContext:
    """Relay context: verify the peer against [trust] ca_files, present our certificate."""
    # Only the space of trust's anchors, not the system store.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    _load_anchors(context, config)
    context.load_cert_chain(str(config.path(config.server.tls_cert)), str(config.path(config.server.tls_key)))
    return context


def revoked_peer(der: bytes | None, anchors: Any, crls: Any) -> str | None:
    """Why the peer's certificate (DER) is revoked, or None when it is not known to be.

    Python's ssl module checks CRLs only with VERIFY_CRL_CHECK_LEAF, which fails every
    handshake with a peer whose CA has published no CRL to us; the space of trust's
    CAs do not all publish one. So the handshake verifies the chain, and this looks up
    the leaf in the CRLs we hold (DATA/pki/crl.pem, `mss cert trust --crl`), each
    checked against its issuer's signature (RFC 5280 6.3): a CRL nobody can forge, for
    an issuer we trust, that lists the serial, refuses the peer.
    """
    if not der:
        return None
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    now = dt.datetime.now(dt.UTC)
    for issuer in anchors:
        if issuer.subject != cert.issuer:
            continue
        for crl in crls:
            try:
                if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):
                    continue
            except (TypeError, ValueError):
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None and entry.revocation_date_utc <= now:
                return (f"certificate serial {cert.serial_number:X} revoked on "
                        f"{entry.revocation_date_utc:%Y-%m-%d} by {issuer.subject.rfc4514_string()}")
    return None
