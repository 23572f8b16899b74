"""The Received trace header (RFC 5321 4.4, with the TLS clause of RFC 8314 7)."""

from __future__ import annotations

import email.utils
import secrets


def new_queue_id() -> str:
    return secrets.token_hex(8).upper()


def received_header(
    *,
    helo: str,
    peer_ip: str,
    by_host: str,
    protocol: str,
    queue_id: str,
    recipient: str | None = None,
    tls: tuple[str, str] | None = None,
    timestamp: float | None = None,
) -> bytes:
    """`protocol` per RFC 3848: ESMTP, ESMTPS, ESMTPSA... One folded header, CRLF-ended."""
    helo_clean = "".join(c for c in helo if c.isprintable() and c not in "()\r\n")[:255] or "unknown"
    lines = [f"Received: from {helo_clean} ([{peer_ip}])", f"\tby {by_host} (mss) with {protocol} id {queue_id}"]
    if tls:
        lines[-1] += f" (version={tls[0]} cipher={tls[1]})"
    if recipient:
        lines.append(f"\tfor <{recipient}>")
    lines[-1] += ";"
    lines.append("\t" + email.utils.formatdate(timestamp, localtime=False))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")
