"""What the security tests share: real instances, TLS clients, raw SMTP dialogues."""

from __future__ import annotations

import smtplib
import socket
import ssl

from tests.support.instance import MssInstance


def tls_context(inst: MssInstance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca_file))


def submission(inst: MssInstance, source: str = "127.0.0.1") -> smtplib.SMTP:
    """A submission client after STARTTLS, connected from `source` (any 127/8 address
    reaches a listener bound to 127.0.0.1 on Linux, so tests can play two hosts)."""
    client = smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=60, source_address=(source, 0))
    client.starttls(context=tls_context(inst))
    client.ehlo("client.a.example")
    return client


def login_reply(inst: MssInstance, user: str, password: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """(code, text) of one AUTH PLAIN on the submission port from `source` (smtplib's
    login() would try LOGIN after a failed PLAIN: two failures a call)."""
    client = submission(inst, source)
    try:
        client.user, client.password = user, password
        return client.auth("PLAIN", client.auth_plain)
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


class RawSmtp:
    """A plain-socket SMTP dialogue, for what smtplib will not send."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 30) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buffer = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """One whole reply (all its lines); b"" when the server closed."""
        while True:
            lines = self.buffer.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    out = b"\r\n".join(lines[:i + 1])
                    self.buffer = b"\r\n".join(lines[i + 1:])
                    return out
            chunk = self.sock.recv(65536)
            if not chunk:
                out, self.buffer = self.buffer, b""
                return out
            self.buffer += chunk

    def cmd(self, line: str | bytes) -> bytes:
        self.send(line if isinstance(line, bytes) else line.encode())
        return self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data if data.endswith(b"\r\n") else data + b"\r\n")

    def close(self) -> None:
        self.sock.close()
