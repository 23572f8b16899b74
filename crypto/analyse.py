"""Whole-message pipelines: protect an outgoing message, analyse an incoming one.

Outgoing (RFC 8551 3.6, sign then encrypt): a `.p7s` beside each attachment, then a
detached signature over the whole body, then encryption to every recipient.
Incoming: decrypt when we hold a recipient key, verify the outer signature, verify each
attachment's signature, and merge everything into one SignatureReport. Never raises on
bad input: a broken message gets a verdict.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509

from crypto import attachments, smime
from crypto import report as rep
from crypto.keystore import Credential
from crypto.pgp import Pgp, PgpError
from mssmail import mime
from mssmail.mime import addresses


def protect_message(message: bytes, signer: Credential | None,
                    recipients: list[x509.Certificate] | None = None,
                    per_attachment: bool = True) -> bytes:
    """Sign (per attachment and as a whole) and/or encrypt an outgoing message."""
    out = mime.canonical(message)
    if signer is not None:
        if per_attachment:
            header_block, body = mime.split_entity(out)
            outer, content = mime.split_content_headers(header_block)
            entity = attachments.protect(content + b"\r\n" + body, signer)
            out = outer + b"MIME-Version: 1.0\r\n" + entity
        out = smime.sign_message(out, signer, detached=True)
    if recipients:
        out = smime.encrypt_message(out, recipients)
    return out


def _pgp_kind(message: bytes) -> str | None:
    header_block, _ = mime.split_entity(message)
    msg = mime.parse_headers(header_block)
    protocol = (msg.param("protocol") or "").lower()
    if msg.content_type() == "multipart/encrypted" and "pgp-encrypted" in protocol:
        return "encrypted"
    if msg.content_type() == "multipart/signed" and "pgp-signature" in protocol:
        return "signed"
    return None


def analyse_message(message: bytes, trust: smime.Trust,
                    creds: list[Credential] | Callable[[], list[Credential]] | None = None,
                    pgp: Pgp | None = None) -> tuple[rep.SignatureReport, bytes]:
    """(report, the clear message as a reader should see it). `creds` (the recipients'
    decryption credentials) may be a function giving them, called only for an
    encrypted message: reading them from the key store was a tenth of a signed mail's
    check at delivery, where most protected mail is signed only."""
    report = rep.SignatureReport()
    clear = mime.canonical(message)
    try:
        if pgp is not None and _pgp_kind(clear) == "encrypted":
            report.encrypted, report.encryption = True, "OpenPGP (PGP/MIME)"
            try:
                clear = pgp.decrypt_message(clear)
                report.decrypted = True
            except PgpError as exc:
                report.decrypted, report.summary = False, str(exc)
                return report, mime.canonical(message)
        if pgp is not None and _pgp_kind(clear) == "signed":
            pgp_report = pgp.verify_message(clear)
            report.signers += pgp_report.signers
            report.parts += pgp_report.parts
        if smime.is_smime(clear) == "enveloped":
            report.encrypted, report.encryption = True, "S/MIME enveloped-data"
            try:
                clear = smime.decrypt_message(clear, (creds() if callable(creds) else creds) or [])
                report.decrypted = True
            except smime.SmimeError as exc:
                report.decrypted = False
                report.summary = str(exc)
                return report, mime.canonical(message)
        inner = clear
        kind = smime.is_smime(clear)
        if kind in ("signed", "opaque"):
            signed_report, inner = smime.verify_message(clear, trust)
            report.signers += signed_report.signers
            report.parts += signed_report.parts
            if kind == "opaque":
                header_block, _ = mime.split_entity(clear)
                outer, _ = mime.split_content_headers(header_block)
                clear = outer + b"MIME-Version: 1.0\r\n" + mime.canonical(inner)
        if pgp is not None and _pgp_kind(clear) == "signed":
            header_block, body = mime.split_entity(clear)
            boundary = mime.parse_headers(header_block).boundary() or ""
            inner = (mime.multipart_parts(body, boundary) or [clear])[0]
        parts, signers = attachments.verify(inner, trust, pgp)
        report.parts += parts
        report.signers += signers
    except Exception as exc:  # a verdict, never a crash (issue 4 point 7)
        report.signers.append(rep.SignerReport("smime", rep.INVALID,
                                               f"message illisible ({exc.__class__.__name__})"))
    _check_sender(message, report)
    encrypted, decrypted, summary = report.encrypted, report.decrypted, report.summary
    report.settle()
    report.encrypted, report.decrypted = encrypted, decrypted
    if decrypted is False:
        report.summary = summary
    return report, clear


def _check_sender(message: bytes, report: rep.SignatureReport) -> None:
    """RFC 8550 section 3: the From (or Sender) address must be in the signer's certificate."""
    header_block, _ = mime.split_entity(mime.canonical(message))
    headers = mime.parse_headers(header_block)
    senders = {m.address.lower() for f in headers.all("From") + headers.all("Sender")
               for m in addresses.parse(f.value).mailboxes if m.domain}
    if not senders:
        return
    for signer in report.signers:
        if signer.method != "smime" or signer.status != rep.VALID or not signer.email:
            continue
        if signer.email.lower() not in senders:
            signer.status = rep.UNTRUSTED
            signer.detail = (f"the certificate is for {signer.email}, "
                             f"not for the sender {', '.join(sorted(senders))}")
