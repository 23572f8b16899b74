"""One relay attempt over SMTP (blocking; run in a worker thread).

Security rules: STARTTLS is required (a peer that does not offer it gets nothing, the
attempt is a temporary failure); the peer's certificate must chain to [trust] ca_files
and match the host name we connected to; we present our server certificate as a client
certificate (mutual TLS). Nothing of the envelope is sent before TLS is up.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mssmail.store.outbound import RecipientResult
from mssmail.tls import revoked_peer

SENT, FAILED, DEFERRED = "sent", "failed", "deferred"
# RFC 5321 4.2.1: reply classes.
POSITIVE_COMPLETION = 2
TRANSIENT_NEGATIVE = 4
PERMANENT_NEGATIVE = 5

# RFC 5321 2.3.8: CR and LF only ever travel together. Every line end, CRLF, bare LF
# or bare CR, becomes CRLF before sending: a bare CR passed on is the raw material of
# SMTP smuggling ("\r.\r" read as the end of data by a peer that ends lines on CR),
# and smtplib's dot-stuffing only looks after LF.
_LINE_END = re.compile(rb"\r\n|\r|\n")


class AttemptError(Exception):
    """The whole attempt failed before any recipient was answered."""

    def __init__(self, message: str, permanent: bool = False, code: int = 0) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True)
class Peer:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def normalise_line_ends(raw: bytes) -> bytes:
    """`raw` with every line end as CRLF (no bare CR, no bare LF left)."""
    return _LINE_END.sub(b"\r\n", raw)


def _classify(code: int) -> str:
    if code // 100 == POSITIVE_COMPLETION:
        return SENT
    if code // 100 == PERMANENT_NEGATIVE:
        return FAILED
    return DEFERRED


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())


def deliver(peer: Peer, context: ssl.SSLContext, helo: str, sender: str,
            recipients: Sequence[str], raw: bytes, timeout: float,
            trust: Any = None) -> dict[str, RecipientResult]:
    """Try to hand `raw` to `peer`; a result per recipient (never raises for SMTP/network errors).

    `trust` (crypto.smime.Trust: anchors and CRLs) lets a revoked peer certificate stop
    the attempt after the handshake, before anything of the envelope is sent."""
    try:
        return _deliver(peer, context, helo, sender, recipients, raw, timeout, trust)
    except AttemptError as exc:
        status = FAILED if exc.permanent else DEFERRED
        return {r: RecipientResult(status, exc.code, str(exc), str(peer)) for r in recipients}
    except ssl.SSLCertVerificationError as exc:
        message = f"TLS: certificate of {peer} not trusted ({exc.verify_message or exc.reason})"
        return {r: RecipientResult(DEFERRED, 0, message, str(peer)) for r in recipients}
    except (TimeoutError, ssl.SSLError, smtplib.SMTPException, OSError) as exc:
        message = f"{type(exc).__name__} talking to {peer}: {exc}"
        return {r: RecipientResult(DEFERRED, 0, message, str(peer)) for r in recipients}


def _deliver(peer: Peer, context: ssl.SSLContext, helo: str, sender: str,
             recipients: Sequence[str], raw: bytes, timeout: float, trust: Any) -> dict[str, RecipientResult]:
    remote = str(peer)
    try:
        # Connecting in the constructor also sets the name TLS checks the certificate against.
        session = smtplib.SMTP(peer.host, peer.port, local_hostname=helo, timeout=timeout)
    except smtplib.SMTPConnectError as exc:
        raise AttemptError(f"{peer} refused the connection: {exc.smtp_code} {_text(exc.smtp_error)}",
                           permanent=exc.smtp_code // 100 == PERMANENT_NEGATIVE, code=exc.smtp_code) from exc
    with session as smtp:
        code, reply = smtp.ehlo()
        if code // 100 != POSITIVE_COMPLETION:
            raise AttemptError(f"{peer} refused EHLO: {code} {_text(reply)}")
        if not smtp.has_extn("starttls"):
            # Never fall back to plaintext: health data only travels encrypted.
            raise AttemptError(f"{peer} does not offer STARTTLS; not sending in clear")
        code, reply = smtp.starttls(context=context)
        if code // 100 != POSITIVE_COMPLETION:  # smtplib raises on != 220; defensive
            raise AttemptError(f"{peer} refused STARTTLS: {code} {_text(reply)}")
        if trust is not None:
            revoked = revoked_peer(smtp.sock.getpeercert(binary_form=True), trust.anchors, trust.crls)
            if revoked:
                # Temporary: the peer may install a new certificate before the message expires.
                raise AttemptError(f"TLS: certificate of {peer} not trusted ({revoked})")
        smtp.ehlo()
        data = normalise_line_ends(raw)
        options: list[str] = []
        if smtp.has_extn("size"):
            options.append(f"SIZE={len(data)}")
        if any(b > 127 for b in data) and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        code, reply = smtp.mail(sender, options)
        if code // 100 != POSITIVE_COMPLETION:
            status = _classify(code)
            return {r: RecipientResult(status, code, _text(reply), remote) for r in recipients}
        results: dict[str, RecipientResult] = {}
        accepted: list[str] = []
        for rcpt in recipients:
            code, reply = smtp.rcpt(rcpt)
            if code // 100 == POSITIVE_COMPLETION:
                accepted.append(rcpt)
            else:
                results[rcpt] = RecipientResult(_classify(code), code, _text(reply), remote)
        if not accepted:
            smtp.rset()
            return results
        try:
            code, reply = smtp.data(data)
        except smtplib.SMTPDataError as exc:
            code, reply = exc.smtp_code, exc.smtp_error
        for rcpt in accepted:
            results[rcpt] = RecipientResult(_classify(code), code, _text(reply), remote)
        # The message is accepted; a lost QUIT changes nothing.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        return results
