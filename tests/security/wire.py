"""Raw protocol pieces for the security tests: LDAP messages built octet by octet (so that
malformed ones can be made), responses read back, and sockets watched for the server closing."""

from __future__ import annotations

import selectors
import socket
import ssl
import time

from directory import ber

# RFC 4511 values the tests check, written out here so that they do not come from the code
# under test: resultCodes (appendix A) and protocolOp tags (section 4.2 onwards).
PROTOCOL_ERROR = 2
SIZE_LIMIT_EXCEEDED = 4
ADMIN_LIMIT_EXCEEDED = 11
UNAVAILABLE = 52
UNWILLING_TO_PERFORM = 53
BIND_RESPONSE = 0x61
SEARCH_RESULT_ENTRY = 0x64
SEARCH_RESULT_DONE = 0x65
EXTENDED_RESPONSE = 0x78


def tlv(tag: int, content: bytes) -> bytes:
    """One BER element, definite length (X.690 section 8.1.3)."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(body))) + body + content


def integer(v: int, tag: int = 0x02) -> bytes:
    return tlv(tag, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def octets(v: bytes | str, tag: int = 0x04) -> bytes:
    return tlv(tag, v.encode() if isinstance(v, str) else v)


def message(msg_id: int, op: bytes, controls: bytes = b"") -> bytes:
    return tlv(0x30, integer(msg_id) + op + controls)


def bind(msg_id: int, dn: str = "", password: str = "") -> bytes:
    """RFC 4511 section 4.2: simple bind (empty dn and password: anonymous)."""
    return message(msg_id, tlv(0x60, integer(3) + octets(dn) + octets(password, 0x80)))


def starttls(msg_id: int) -> bytes:
    return message(msg_id, tlv(0x77, octets(b"1.3.6.1.4.1.1466.20037", 0x80)))


def search(msg_id: int, base: str = "", scope: int = 0, flt: bytes | None = None,
           attrs: tuple[str, ...] = (), controls: bytes = b"") -> bytes:
    """RFC 4511 section 4.5.1; the default is the root DSE: base "", baseObject, (objectClass=*)."""
    flt = flt if flt is not None else octets(b"objectClass", 0x87)
    body = (octets(base) + integer(scope, 0x0A) + integer(0, 0x0A) + integer(0) + integer(0)
            + tlv(0x01, b"\x00") + flt + tlv(0x30, b"".join(octets(a) for a in attrs)))
    return message(msg_id, tlv(0x63, body), controls)


def responses(sock: socket.socket | ssl.SSLSocket, *, until_id: int | None = None,
              timeout: float = 10.0) -> tuple[list[tuple[int, int, int | None]], bool]:
    """LDAP messages read from `sock` as (messageID, protocolOp tag, resultCode or None for an
    entry), until a result for `until_id` (if given), end of stream, or `timeout` seconds; and
    whether the server closed the connection."""
    sock.settimeout(timeout)
    buf = b""
    out: list[tuple[int, int, int | None]] = []
    closed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while True:
            end = ber.message_end(buf)
            if end is None:
                break
            msg, buf = buf[:end], buf[end:]
            out.append(_summary(msg))
        if until_id is not None and any(m[0] == until_id and m[2] is not None for m in out):
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except (ConnectionResetError, ssl.SSLError, OSError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        buf += chunk
    return out, closed


def _summary(msg: bytes) -> tuple[int, int, int | None]:
    msg_id = ber.message_id(msg)
    tag = ber.op_tag(msg)
    _, start = ber._length(msg, 1)
    _, _, id_stop = ber._tlv(msg, start, len(msg))
    _, op_start, op_stop = ber._tlv(msg, id_stop, len(msg))
    if tag == SEARCH_RESULT_ENTRY:
        return msg_id, tag, None
    _, cs, ce = ber._tlv(msg, op_start, op_stop)
    return msg_id, tag, int.from_bytes(msg[cs:ce], "big")


def is_notice(response: tuple[int, int, int | None], code: int) -> bool:
    """RFC 4511 section 4.4.1: messageID 0, an ExtendedResponse, with that resultCode."""
    return response[0] == 0 and response[1] == EXTENDED_RESPONSE and response[2] == code


def closed_by_server(socks: list[socket.socket], expected: int, timeout: float = 15.0) -> set[socket.socket]:
    """The sockets the server closed (EOF or reset), waiting until `expected` of them are, or
    `timeout` seconds; any data read is dropped (a refusal message). epoll, not select(): a
    flood holds descriptors above 1024."""
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        while len(closed) < expected and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                s = key.fileobj
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    closed.add(s)  # type: ignore[arg-type]
                    sel.unregister(s)
    return closed


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` from the loopback address `source` (all of 127/8 is
    local on Linux: many "hosts" on one machine)."""
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def tagged(sock: socket.socket | ssl.SSLSocket, tag: bytes) -> bytes:
    """IMAP responses up to and including the tagged one for `tag`."""
    data = b""
    while not (tag + b" " in data and data.rfind(b"\r\n") > data.find(tag + b" ")):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
