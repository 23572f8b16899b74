"""The `imap` target: APPEND the received mail into a folder of another IMAP server (the
mailbox a practice's software polls), flagged with the keyword `$MSSIntegrated`.

Duplicates are skipped with the peer's help, which IMAP gives: before APPEND the
folder is searched for the message's `X-MSS-Original-Message-ID` (`UID SEARCH HEADER`,
RFC 3501 6.4.4 / RFC 9051 6.4.4); found = already appended by an earlier attempt whose
answer was lost: done, nothing appended. The bytes are those of the `smtp` target
(`connectors.smtp.render`: the original under resent fields and that header), rendered
once when the message is routed.

Target: `imaps://host:port/Folder` (TLS from the start) or `imap://host:port/Folder`
(STARTTLS, required). Options: `user` and `password_file` (LOGIN after TLS; the
password is never in the database), `ca_file`. Answers: OK done; NO to APPEND
(`[TRYCREATE]`, over quota, refused) permanent unless the server says
`[UNAVAILABLE]`/`[INUSE]` (RFC 5530: try later); a network error or a timeout = retry.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from connectors.folder import PermanentError, TemporaryError
from connectors.smtp import HEADER

OPTION_KEYS = ("ca_file", "user", "password_file")
KEYWORD = "$MSSIntegrated"
TRY_LATER = ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]")


@dataclass(frozen=True)
class Peer:
    scheme: str
    host: str
    port: int
    folder: str


def parse_target(target: str) -> Peer:
    if any(c in target for c in "\r\n\t\0 "):  # urlsplit would silently drop them
        raise ValueError(f"a target has no white space or control characters: {target!r}.")
    parts = urlsplit(target)
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or any(c in folder for c in "\r\n\0"):
        raise ValueError(f"an imap target is imaps://host:port/Folder, not {target!r}.")
    try:
        port = parts.port or (993 if parts.scheme == "imaps" else 143)
    except ValueError:
        raise ValueError(f"bad port in {target!r}.") from None
    return Peer(parts.scheme, parts.hostname, port, folder)


def _quoted(text: str) -> str:
    """An IMAP quoted string (RFC 3501 4.3); a folder or header value never has CR/LF."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _original_id(message: bytes) -> str:
    match = re.search(rb"^" + HEADER.encode() + rb":[ \t]*([^\r\n]+)", message, re.IGNORECASE | re.MULTILINE)
    if match is None:
        raise PermanentError(f"the message to append has no {HEADER} field")
    return match.group(1).decode("utf-8", "replace").strip()


def _text(data: Any) -> str:
    return " ".join(d.decode("utf-8", "replace") for d in (data or []) if isinstance(d, bytes))


def append(target: str, message: bytes, options: Mapping[str, str], timeout: float) -> str:
    """Search, then APPEND when absent; what happened (`appended: ...` with the server's
    answer, or `present: UID n`)."""
    peer = parse_target(target)
    original = _original_id(message)
    context = ssl.create_default_context(cafile=options.get("ca_file") or None)
    client: imaplib.IMAP4
    try:
        if peer.scheme == "imaps":
            client = imaplib.IMAP4_SSL(peer.host, peer.port, ssl_context=context, timeout=timeout)
        else:
            client = imaplib.IMAP4(peer.host, peer.port, timeout=timeout)
            client.starttls(ssl_context=context)
        try:
            if options.get("user"):
                client.login(options["user"], _password(options))
            status, data = client.select(_quoted(peer.folder))
            if status != "OK":
                raise PermanentError(f"SELECT {peer.folder}: {status} {_text(data)}")
            status, data = client.uid("SEARCH", "HEADER", HEADER, _quoted(original))
            if status != "OK":
                raise TemporaryError(f"UID SEARCH: {status} {_text(data)}")
            found = _text(data).split()
            if found:
                return f"present: UID {found[0]}"
            status, appended = client.append(_quoted(peer.folder), f"({KEYWORD})", None, message)
            answer = _text(appended)
            if status != "OK":
                if any(code in answer.upper() for code in TRY_LATER):
                    raise TemporaryError(f"APPEND: {status} {answer}")
                raise PermanentError(f"APPEND: {status} {answer}")
            return f"appended: {answer}"
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()
    except imaplib.IMAP4.error as exc:  # a NO/BAD to LOGIN or STARTTLS, a protocol error
        raise TemporaryError(f"{peer.host}:{peer.port}: {exc}") from exc
    except OSError as exc:
        raise TemporaryError(f"{peer.host}:{peer.port}: {exc.strerror or exc}") from exc


def _password(options: Mapping[str, str]) -> str:
    path = options.get("password_file", "")
    try:
        return Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise TemporaryError(f"cannot read the imap password file {path}: {exc.strerror or exc}") from exc
