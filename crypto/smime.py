"""S/MIME 4.0 (RFC 8551): sign, verify, encrypt, decrypt whole messages.

Signing and enveloping use cryptography's PKCS7 builders; verification is crypto.cms
(asn1crypto + cryptography). Messages are bytes in, bytes out (sans-IO).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from crypto import chain, cms, envelope
from crypto import report as rep
from crypto.keystore import Credential, describe
from mssmail import mime

SIGNED_PROTOCOL = "application/pkcs7-signature"
MICALG = {"sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}


@dataclass
class Trust:
    """What verification trusts: anchors, CRLs, and the time of the check."""

    anchors: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    at: dt.datetime | None = None


class SmimeError(ValueError):
    """A message that cannot be signed, encrypted or decrypted, in one sentence."""


# --- signing -------------------------------------------------------------------------

def sign_bytes(data: bytes, cred: Credential, detached: bool = True) -> bytes:
    """CMS SignedData (DER) over exactly `data` (RFC 5652; signed attributes included)."""
    if cred.key is None:
        raise SmimeError(f"the server does not hold the signature key of {cred.address}.")
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(
        cred.certificate, cred.key, hashes.SHA256())  # type: ignore[arg-type]
    for extra in cred.chain:
        builder = builder.add_certificate(extra)
    options = [pkcs7.PKCS7Options.Binary]
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    return builder.sign(serialization.Encoding.DER, options)


def sign_message(message: bytes, cred: Credential, detached: bool = True) -> bytes:
    """multipart/signed (RFC 8551 3.5.3) or application/pkcs7-mime signed-data (3.5.2)."""
    header_block, body = mime.split_entity(mime.canonical(message))
    outer, content_headers = mime.split_content_headers(header_block)
    if not content_headers:
        content_headers = b"Content-Type: text/plain; charset=utf-8\r\n"
    entity = content_headers + b"\r\n" + body
    if detached:
        signature = sign_bytes(entity, cred, detached=True)
        boundary = mime.new_boundary()
        return (outer + b"MIME-Version: 1.0\r\n"
                + f'Content-Type: multipart/signed; protocol="{SIGNED_PROTOCOL}"; '
                  f'micalg=sha-256;\r\n boundary="{boundary}"\r\n\r\n'.encode()
                + b"This is an S/MIME signed message.\r\n"
                + f"--{boundary}\r\n".encode() + entity
                + f"\r\n--{boundary}\r\n".encode()
                + b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n"
                  b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
                + mime.b64_lines(signature) + f"--{boundary}--\r\n".encode())
    der = sign_bytes(entity, cred, detached=False)
    return (outer + b"MIME-Version: 1.0\r\n"
            + b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
              b"Content-Transfer-Encoding: base64\r\n"
              b'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
            + mime.b64_lines(der))


# --- verification --------------------------------------------------------------------

def signer_report(check: cms.SignerCheck, all_certs: list[x509.Certificate], trust: Trust,
                  covers: list[str]) -> rep.SignerReport:
    """Turn a cryptographic check plus chain validation into a report entry."""
    out = rep.SignerReport("smime", rep.INVALID, check.detail, covers=covers,
                           digest_algorithm=check.digest_algorithm,
                           signature_algorithm=check.signature_algorithm,
                           signing_time=check.signing_time.isoformat() if check.signing_time else None)
    if check.certificate is not None:
        info = describe(check.certificate)
        out.subject, out.rpps, out.issuer, out.serial = (info["subject"], info["rpps"],
                                                          info["issuer"], info["serial"])
        out.email = info["emails"][0] if info["emails"] else None
        out.not_before, out.not_after = info["not_before"], info["not_after"]
    if check.status == cms.SIG_TAMPERED:
        out.status = rep.TAMPERED
        return out
    if check.status != cms.SIG_OK or check.certificate is None:
        return out
    # RFC 8551 2.5.1 / RFC 5652 11.3: the certificate must be valid at signing time when
    # the signer says when that was, and still not revoked now.
    at = trust.at or dt.datetime.now(dt.UTC)
    cert = check.certificate
    if check.signing_time is not None:
        signed_at = check.signing_time if check.signing_time.tzinfo else check.signing_time.replace(tzinfo=dt.UTC)
        if signed_at > at + dt.timedelta(minutes=15):
            out.detail = f"the signing time {signed_at:%Y-%m-%d %H:%M} is in the future"
            return out
        if not cert.not_valid_before_utc <= signed_at <= cert.not_valid_after_utc:
            out.status = rep.EXPIRED
            out.detail = "the message was signed outside the certificate's validity period"
            return out
    result = chain.validate(cert, all_certs, trust.anchors, trust.crls, "signature", at)
    out.chain_status, out.chain, out.revocation = result.status, result.path, result.revocation
    if result.ok:
        out.status, out.detail = rep.VALID, "signature vérifiée, certificat de confiance"
    else:
        out.status = {chain.EXPIRED: rep.EXPIRED, chain.NOT_YET_VALID: rep.EXPIRED,
                      chain.REVOKED: rep.REVOKED}.get(result.status, rep.UNTRUSTED)
        if result.status == chain.REVOKED:
            out.revocation = chain.REV_REVOKED
        out.detail = result.detail
    return out


def verify_detached(content: bytes, signature_der: bytes, trust: Trust,
                    covers: list[str]) -> list[rep.SignerReport]:
    check = cms.verify_signed_data(signature_der, content)
    if not check.signers:
        return [rep.SignerReport("smime", rep.INVALID, check.detail, covers=covers)]
    return [signer_report(s, check.certificates, trust, covers) for s in check.signers]


def _content_type(header_block: bytes) -> tuple[str, dict[str, str]]:
    msg = mime.parse_headers(header_block)
    params = {p.name: p.value for p in msg.content().params}
    return msg.content_type(), params


def is_smime(message: bytes) -> str | None:
    """'signed', 'opaque', 'enveloped' or None for the message's outermost structure."""
    header_block, _ = mime.split_entity(mime.canonical(message))
    ctype, params = _content_type(header_block)
    if ctype == "multipart/signed" and "pkcs7-signature" in params.get("protocol", ""):
        return "signed"
    if ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        kind = params.get("smime-type", "").lower()
        return "opaque" if kind == "signed-data" else "enveloped"
    return None


def verify_message(message: bytes, trust: Trust) -> tuple[rep.SignatureReport, bytes]:
    """Verify an S/MIME-signed message: (report, inner entity that was signed)."""
    report = rep.SignatureReport()
    canonical = mime.canonical(message)
    header_block, body = mime.split_entity(canonical)
    kind = is_smime(canonical)
    try:
        if kind == "signed":
            _, params = _content_type(header_block)
            parts = mime.multipart_parts(body, params.get("boundary", ""))
            if len(parts) != 2:
                raise SmimeError("a multipart/signed message must have exactly two parts")
            sig_headers, sig_body = mime.split_entity(parts[1])
            signature = mime.decode_body(sig_headers, sig_body)
            report.signers = verify_detached(parts[0], signature, trust, ["corps du message"])
            inner = parts[0]
        elif kind == "opaque":
            der = mime.decode_body(header_block, body)
            check = cms.verify_signed_data(der)
            report.signers = ([signer_report(s, check.certificates, trust, ["corps du message"])
                               for s in check.signers]
                              or [rep.SignerReport("smime", rep.INVALID, check.detail)])
            inner = check.content or b""
        else:
            return report.settle(), canonical
    except (SmimeError, ValueError) as exc:
        report.signers = [rep.SignerReport("smime", rep.INVALID, str(exc))]
        return report.settle(), canonical
    status = rep.PART_TAMPERED if any(s.status == rep.TAMPERED for s in report.signers) else (
        rep.PART_INTACT if all(s.status != rep.INVALID for s in report.signers) else rep.PART_UNVERIFIABLE)
    report.parts.append(rep.PartReport("corps du message", "message", status,
                                       signed_by=report.signers[0].subject or None))
    return report.settle(), inner


# --- encryption ----------------------------------------------------------------------

def encrypt_bytes(data: bytes | bytearray | memoryview, recipients: list[x509.Certificate],
                  oaep: bool = False) -> bytearray:
    """CMS EnvelopedData (DER), AES-256-CBC, RSA key transport to each recipient.

    PKCS#1 v1.5 key transport by default (what every S/MIME client reads), RSA-OAEP
    (RFC 3560) with `oaep=True`. One output buffer; `data` is not copied (crypto.envelope).
    """
    if not recipients:
        raise SmimeError("no recipient certificate to encrypt to.")
    try:
        return envelope.encrypt(data, recipients, oaep=oaep)
    except envelope.EnvelopeError as exc:
        raise SmimeError(f"cannot encrypt: {exc}.") from exc


def encrypt_message(message: bytes, recipients: list[x509.Certificate]) -> bytes:
    """application/pkcs7-mime; smime-type=enveloped-data (RFC 8551 3.3)."""
    canonical = mime.canonical(message)
    header_block, body_start = mime.body_offset(canonical)
    outer, content_headers = mime.split_content_headers(header_block)
    if not content_headers:
        content_headers = b"Content-Type: text/plain; charset=utf-8\r\n"
    # The entity is encrypted from its pieces (no joined copy), the DER is base64-encoded
    # into one buffer that already holds the headers: content, DER and text exist once each.
    der = encrypt_bytes([content_headers, b"\r\n", memoryview(canonical)[body_start:]], recipients)
    out = mime.b64_lines_into(der, outer + b"MIME-Version: 1.0\r\n"
                              + b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; '
                                b'name="smime.p7m"\r\n'
                                b"Content-Transfer-Encoding: base64\r\n"
                                b'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n')
    del der
    return bytes(out)


def _key_candidates(creds: list[Credential]) -> list[tuple[x509.Certificate, rsa.RSAPrivateKey]]:
    return [(c.certificate, c.key) for c in creds if isinstance(c.key, rsa.RSAPrivateKey)]


def _decrypt_error(exc: envelope.EnvelopeError) -> SmimeError:
    if "not encrypted to any" in str(exc):
        return SmimeError("the message is not encrypted to any key the server holds.")
    return SmimeError(f"decryption failed: {exc}.")


def decrypt_bytes(der: bytes | bytearray | memoryview, creds: list[Credential]) -> bytes | bytearray:
    """The content of an EnvelopedData for whichever of `creds` it is addressed to."""
    try:
        _, content = envelope.decrypt_for(der, _key_candidates(creds))
    except envelope.EnvelopeError as exc:
        raise _decrypt_error(exc) from exc
    return content


def decrypt_message(message: bytes, creds: list[Credential]) -> bytes:
    """The message with its encrypted body replaced by the clear entity."""
    canonical = mime.canonical(message)
    header_block, body_start = mime.body_offset(canonical)
    outer, _ = mime.split_content_headers(header_block)
    prefix = outer + b"MIME-Version: 1.0\r\n"
    # The DER is decoded into one buffer with room for the headers in front; the content is
    # decrypted over its own ciphertext and the headers written just before it.
    buf, start, end = mime.decode_body_into(header_block, memoryview(canonical)[body_start:],
                                            reserve=len(prefix))
    try:
        _, first, last = envelope.decrypt_in_place(buf, _key_candidates(creds), start, end)
    except envelope.EnvelopeError as exc:
        raise _decrypt_error(exc) from exc
    begin = first - len(prefix)
    buf[begin:first] = prefix
    del buf[last:]
    del buf[:begin]  # CPython moves the start of a bytearray: no copy
    if not mime.is_canonical(buf):
        return prefix + mime.canonical(bytes(buf[len(prefix):]))
    return bytes(buf)
