"""The `mllp` target: an HL7 v2 message over TCP in MLLP framing, and its ACK.

MLLP (HL7 v2 Minimal Lower Layer Protocol, release 2, section 1.4): a message is sent as
<VT> message <FS><CR> (0x0B ... 0x1C 0x0D) and the receiver answers with an ACK in the
same framing. MSA-1 (HL7 v2.5 chapter 2, table 0008): AA/CA accepted (done), AE/CE error
(the receiver refused this message: permanent, a dead letter), AR/CR reject (the
receiver could not take it now: retry). No answer within the timeout is a retry too.

Over TLS (`mllps://host:port`): MLLP itself defines no security (it leaves that to the
transport), so the frames go inside a TLS >= 1.2 session whose
server certificate is checked against the system's CAs or the rule's `ca_file`, with the
host name checked (RFC 6125 section 6), and a client certificate
(`cert_file`, `key_file`) for a receiver that requires mTLS: the same options and checks
as the `fhir` target. A certificate that is not accepted is a retry (the operator fixes
the CA or the name; the job waits, then goes to the dead letters after 48 h).

Not exactly once without the peer: a retry resends the *same* bytes, so the same MSH-10
control id, which the receiver uses to drop a duplicate (the worker renders the message
once, when it routes, and keeps it in the blob store).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.tls import client_context
from mssmail.store.connectors import parse_mllp_target as parse_url

START, END = b"\x0b", b"\x1c\r"
MAX_ACK = 1024 * 1024  # an ACK is a few hundred bytes; a peer may not make us buffer more
OPTION_KEYS = ("ca_file", "cert_file", "key_file")  # TLS only (mllps://); file paths, never a secret


class MllpError(Exception):
    """Transport trouble (refused, reset, timeout, garbage): retry later."""


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1
    control_id: str  # MSA-2: the MSH-10 acknowledged
    text: str  # MSA-3 / ERR, for the job's last error
    # ERR-5 (application error code, HL7 v2.5 chapter 2.15.5; ERR-3 when ERR-5 is
    # empty): the ANS volet's 900-906 table, which the acknowledgement MDN reports.
    error_code: str = ""

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")

    @property
    def permanent(self) -> bool:
        return self.code in ("AE", "CE")


def frame(message: bytes) -> bytes:
    return START + message + END


def parse_ack(framed: bytes) -> Ack:
    """The MSA of an MLLP-framed ACK; MllpError for anything that is not one."""
    if not framed.startswith(START) or not framed.endswith(END):
        raise MllpError("the answer is not an MLLP frame")
    text = framed[1:-2].decode("latin-1")
    segments = [s for s in text.replace("\n", "\r").split("\r") if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        raise MllpError("the answer has no MSH segment")
    separator = segments[0][3]
    for seg in segments:
        fields = seg.split(separator)
        if fields[0] == "MSA" and len(fields) > 1:
            errors = [s.split(separator) for s in segments if s.startswith("ERR" + separator)]
            detail = " ".join(f[-1] for f in errors if len(f) > 1)
            codes = [f[5] if len(f) > 5 and f[5] else f[3] if len(f) > 3 else "" for f in errors]
            return Ack(fields[1], fields[2] if len(fields) > 2 else "",
                       " ".join(x for x in (fields[3] if len(fields) > 3 else "", detail) if x),
                       next((c for c in codes if c), ""))
    raise MllpError("the answer has no MSA segment")


def control_id(message: bytes) -> str:
    """MSH-10 of an HL7 v2 message (the field after the message type)."""
    first = message.split(b"\r", 1)[0].decode("latin-1")
    if not first.startswith("MSH") or len(first) < 4:
        return ""
    fields = first.split(first[3])
    return fields[9] if len(fields) > 9 else ""  # MSH-1 is the separator itself


def send(host: str, port: int, message: bytes, timeout: float,
         context: ssl.SSLContext | None = None) -> Ack:
    """Send one message and read its ACK (blocking, bounded by `timeout` per step),
    inside TLS when `context` is given."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if context is None:
                received = _exchange(raw, message)
            else:
                with context.wrap_socket(raw, server_hostname=host) as sock:
                    received = _exchange(sock, message)
    except TimeoutError as exc:
        raise MllpError(f"no ACK from {host}:{port} within {timeout:g} s") from exc
    except ssl.SSLCertVerificationError as exc:
        raise MllpError(f"{host}:{port}: TLS certificate not accepted ({exc.verify_message})") from exc
    except ssl.SSLError as exc:
        raise MllpError(f"{host}:{port}: TLS failed ({exc.reason or exc})") from exc
    except OSError as exc:
        raise MllpError(f"{host}:{port}: {exc.strerror or exc}") from exc
    return parse_ack(received)


def _exchange(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(frame(message))
    received = bytearray()
    while not received.endswith(END):
        chunk = sock.recv(65536)
        if not chunk:
            raise MllpError("the peer closed the connection before its ACK")
        received += chunk
        if len(received) > MAX_ACK:
            raise MllpError("the ACK is larger than 1 MiB")
    return bytes(received)


def deliver(target: str, message: bytes, timeout: float, options: Mapping[str, str] | None = None) -> Ack:
    """Send to a target as a rule names it (`host:port`, `mllp://host:port` or
    `mllps://host:port`) and read the ACK; MllpError for transport trouble."""
    endpoint = parse_url(target)
    try:
        context = client_context(options or {}) if endpoint.tls else None
    except (OSError, ssl.SSLError) as exc:  # a missing or unreadable CA / certificate file
        raise MllpError(f"the TLS files of {target} cannot be loaded: {getattr(exc, 'strerror', None) or exc}") from exc
    return send(endpoint.host, endpoint.port, message, timeout, context)


def parse_target(target: str) -> tuple[str, int]:
    """(host, port) of a target in any of its forms; ValueError otherwise."""
    endpoint = parse_url(target)
    return endpoint.host, endpoint.port
