"""Certificate path validation (RFC 5280 section 6, the parts a mail PKI needs).

Builds the path from the end-entity certificate up to one of the trust anchors using
the certificates the signer sent, checks each link's signature with cryptography's
`verify_directly_issued_by`, validity at the given time, basicConstraints of issuers,
key usage and extended key usage of the end entity, and revocation by CRL.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

# Verdicts, worst first where several apply.
VALID = "valid"
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"
REVOKED = "revoked"
UNKNOWN_ISSUER = "unknown-issuer"
BAD_USAGE = "bad-usage"
BAD_CHAIN = "bad-chain"

# Revocation states.
REV_GOOD = "good"
REV_REVOKED = "revoked"
REV_UNKNOWN = "unknown"  # no CRL for an issuer on the path


@dataclass
class ChainResult:
    status: str
    detail: str
    path: list[str] = field(default_factory=list)  # subjects, end entity first
    revocation: str = REV_UNKNOWN
    revoked_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == VALID


def _usage_ok(cert: x509.Certificate, usage: str) -> str | None:
    """None when the certificate may be used for `usage`, else why not (RFC 8550 4.4)."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None:
        if usage == "signature" and not (ku.digital_signature or ku.content_commitment):
            return "its key usage does not allow signing"
        if usage == "encryption" and not (ku.key_encipherment or ku.key_agreement):
            return "its key usage does not allow encryption"
        if usage == "tls" and not ku.digital_signature:
            return "its key usage does not allow authentication"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    wanted = ExtendedKeyUsageOID.CLIENT_AUTH if usage == "tls" else ExtendedKeyUsageOID.EMAIL_PROTECTION
    if wanted not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        return f"its extended key usage lacks {wanted._name}"
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, Exception):  # InvalidSignature, unsupported key types
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_crl(cert: x509.Certificate, issuer: x509.Certificate,
               crls: list[x509.CertificateRevocationList], at: dt.datetime) -> tuple[str, str | None]:
    for crl in crls:
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None and entry.revocation_date_utc <= at + dt.timedelta(minutes=5):
            return REV_REVOKED, entry.revocation_date_utc.isoformat()
        if entry is not None:
            continue
        return REV_GOOD, None
    return REV_UNKNOWN, None


def validate(cert: x509.Certificate, intermediates: list[x509.Certificate],
             anchors: list[x509.Certificate], crls: list[x509.CertificateRevocationList],
             usage: str = "signature", at: dt.datetime | None = None) -> ChainResult:
    """Validate `cert` for `usage` at time `at` (default now). Never raises on bad input."""
    at = at or dt.datetime.now(dt.UTC)
    path = [cert]
    pool = [c for c in intermediates if c != cert]
    anchor: x509.Certificate | None = None
    while anchor is None and len(path) < 8:
        current = path[-1]
        anchor = next((a for a in anchors if a == current or _issued_by(current, a)), None)
        if anchor is not None:
            break
        parent = next((c for c in pool if c not in path and _issued_by(current, c)), None)
        if parent is None:
            return ChainResult(UNKNOWN_ISSUER,
                               f"no trusted issuer for '{current.issuer.rfc4514_string()}'",
                               [c.subject.rfc4514_string() for c in path])
        path.append(parent)
    if anchor is None:
        return ChainResult(BAD_CHAIN, "the certificate path is too long",
                           [c.subject.rfc4514_string() for c in path])
    full = path if path[-1] == anchor else [*path, anchor]
    subjects = [c.subject.rfc4514_string() for c in full]
    for c in full:
        if at > c.not_valid_after_utc:
            return ChainResult(EXPIRED, f"'{c.subject.rfc4514_string()}' expired on "
                               f"{c.not_valid_after_utc:%Y-%m-%d}", subjects)
        if at < c.not_valid_before_utc:
            return ChainResult(NOT_YET_VALID, f"'{c.subject.rfc4514_string()}' is valid only from "
                               f"{c.not_valid_before_utc:%Y-%m-%d}", subjects)
    for depth, c in enumerate(full[1:]):
        if not _is_ca(c):
            return ChainResult(BAD_CHAIN, f"'{c.subject.rfc4514_string()}' is not a CA", subjects)
        # RFC 5280 4.2.1.9: pathLenConstraint = how many intermediate CAs may follow.
        limit = c.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        if limit is not None and depth > limit:
            return ChainResult(BAD_CHAIN, f"'{c.subject.rfc4514_string()}' allows {limit} intermediate "
                               f"CA(s) below it, the path has {depth}", subjects)
    why = _usage_ok(cert, usage)
    if why:
        return ChainResult(BAD_USAGE, f"the certificate is not for {usage}: {why}", subjects)
    revocation = REV_GOOD
    for child, parent in itertools.pairwise(full):
        state, when = _check_crl(child, parent, crls, at)
        if state == REV_REVOKED:
            return ChainResult(REVOKED, f"'{child.subject.rfc4514_string()}' was revoked on {when}",
                               subjects, REV_REVOKED, when)
        if state == REV_UNKNOWN:
            revocation = REV_UNKNOWN
    return ChainResult(VALID, "trusted certificate path", subjects, revocation)
