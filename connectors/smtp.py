"""The `smtp` target: forward the received mail to the recipient software's own SMTP
intake (a practice's DUI that reads a mailbox, a hospital's integration engine).

What is sent is the original message, untouched below its header (a signature stays
valid), with resent fields on top (RFC 5322 3.6.6: `Resent-From`, `Resent-To`,
`Resent-Date`, `Resent-Message-ID`) and `X-MSS-Original-Message-ID` naming the original
(its Message-ID, or `sha256:<digest>` of its bytes when it had none). It is rendered
once when the message is routed and kept in the blob store, so a retry sends the very
same bytes and the same `Resent-Message-ID`: not exactly once without the peer, but a
peer that keeps the ids it saw drops the duplicate (the docs say so).

Target: `smtp://host:port/recipient@domain` (STARTTLS, required unless the option
`starttls=optional` accepts a peer that does not offer it) or `smtps://host:port/recipient@domain` (TLS from
the start). Options: `ca_file` (the CA that signs the peer), `user` and `password_file`
(AUTH after TLS; the password is never in the database). Replies: 2xx done; 5xx
permanent; 4xx, a network error or a timeout = retry.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from connectors.folder import PermanentError, TemporaryError

OPTION_KEYS = ("ca_file", "user", "password_file", "starttls")
HEADER = "X-MSS-Original-Message-ID"


@dataclass(frozen=True)
class Peer:
    scheme: str
    host: str
    port: int
    recipient: str


def parse_target(target: str) -> Peer:
    """ValueError with one sentence for anything but smtp(s)://host:port/address."""
    if any(c in target for c in "\r\n\t\0 "):  # urlsplit would silently drop them
        raise ValueError(f"a target has no white space or control characters: {target!r}.")
    parts = urlsplit(target)
    recipient = unquote(parts.path.lstrip("/"))
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname or "@" not in recipient \
            or any(c in recipient for c in "\r\n <>,"):
        raise ValueError(f"an smtp target is smtp://host:port/recipient@domain, not {target!r}.")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
    except ValueError:
        raise ValueError(f"bad port in {target!r}.") from None
    return Peer(parts.scheme, parts.hostname, port, recipient)


def _safe(value: str) -> str:
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())[:900]


def render(raw: bytes, *, original_id: str, mailbox: str, recipient: str, resent_id: str, when: datetime) -> bytes:
    """The forwarded bytes: resent fields and X-MSS-Original-Message-ID, then the
    original as it was stored (line ends made CRLF, as SMTP carries them)."""
    head = (f"Resent-From: <{mailbox}>\r\nResent-To: <{_safe(recipient)}>\r\n"
            f"Resent-Date: {format_datetime(when)}\r\nResent-Message-ID: {resent_id}\r\n"
            f"{HEADER}: {_safe(original_id)}\r\n").encode()
    return head + raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _context(options: Mapping[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=options.get("ca_file") or None)


def _password(options: Mapping[str, str]) -> str:
    path = options.get("password_file", "")
    try:
        return Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise TemporaryError(f"cannot read the smtp password file {path}: {exc.strerror or exc}") from exc


def send(target: str, sender: str, message: bytes, options: Mapping[str, str], timeout: float,
         hostname: str = "localhost") -> str:
    """Deliver `message` to the target's recipient; the peer's final reply (`250 ...`)."""
    peer = parse_target(target)
    client: smtplib.SMTP
    try:
        if peer.scheme == "smtps":
            client = smtplib.SMTP_SSL(peer.host, peer.port, local_hostname=hostname, timeout=timeout,
                                      context=_context(options))
        else:
            client = smtplib.SMTP(peer.host, peer.port, local_hostname=hostname, timeout=timeout)
        with client:
            client.ehlo()
            if peer.scheme == "smtp":
                if client.has_extn("starttls"):
                    client.starttls(context=_context(options))
                    client.ehlo()
                elif options.get("starttls", "required") == "required":
                    raise TemporaryError(f"{peer.host}:{peer.port} does not offer STARTTLS")
            if options.get("user"):
                client.login(options["user"], _password(options))
            client.mail(sender, [f"SIZE={len(message)}"] if client.has_extn("size") else [])
            code, reply = client.rcpt(peer.recipient)
            if code >= 300:
                _raise(code, reply, "RCPT")
            code, reply = client.data(message)
            if code >= 300:
                _raise(code, reply, "DATA")
            return f"{code} {reply.decode('utf-8', 'replace')}"
    except smtplib.SMTPResponseException as exc:
        _raise(exc.smtp_code, exc.smtp_error, "SMTP")
    except (OSError, smtplib.SMTPException) as exc:
        raise TemporaryError(f"{peer.host}:{peer.port}: {getattr(exc, 'strerror', None) or exc}") from exc
    raise AssertionError("unreachable")


def _raise(code: int, reply: bytes | str, step: str) -> None:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    message = f"{step} {code} {_safe(text)}"
    if 500 <= code < 600:
        raise PermanentError(message)
    raise TemporaryError(message)
