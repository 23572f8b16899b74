"""aiosmtpd protocol subclass and the listener component (MX and submission).

The protocol class only adds what aiosmtpd lacks: enhanced status codes on every
error reply (RFC 2034), a per-IP connection limit (counted by the handler's gateway,
so that it holds across SMTP worker processes), and bookkeeping so that a shutdown
can let transactions in flight finish. Policy lives in the handlers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket
import ssl
from typing import TYPE_CHECKING, Any, AnyStr

from aiosmtpd.smtp import SMTP, syntax

from mssmail import limits, logs, sasl
from mssmail.limits import BufferBudget
from mssmail.smtp import abuse, data, replies

if TYPE_CHECKING:
    from mssmail.service import ServerContext

log = logging.getLogger("mss.smtp")
# The everyday MAIL/RCPT path: <dot-atom@dot-atom> (RFC 5321 4.1.2, RFC 5322 3.4.1), then
# spaces or tabs. What it matches, the RFC 5322 parser reads the same way (a test
# compares them); anything else goes to that parser.
AUTH_LINE_LIMIT = 12288  # RFC 4954 4
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"[ \t]*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*")
_HAS_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}\b")


def with_enhanced_code(status: str) -> str:
    """aiosmtpd's bare replies, given an RFC 3463 code (never EHLO lines or greetings)."""
    if status in replies.AIOSMTPD_REWRITES:
        return replies.AIOSMTPD_REWRITES[status]
    if (len(status) > 4 and (status[:3].isascii() and status[:3].isdigit()) and status[3] == " " and status[0] in "45"
            and not _HAS_ENHANCED.match(status)):
        return f"{status[:3]} {replies.DEFAULT_ENHANCED[status[0]]} {status[4:]}"
    return status


class MssSMTP(SMTP):
    """One SMTP session."""

    def __init__(self, handler: Any, *, listener: SmtpListener, **kwargs: Any) -> None:
        self.listener = listener
        self.refused = False
        self.admitted = False
        self.in_transaction = False
        self.peer_ip = ""
        # The process's input budget (mssmail.limits), counting the message being read in
        # DATA; over_budget: this one is being read to its end and dropped (data.py).
        ctx = getattr(listener, "ctx", None)
        self.input_budget: BufferBudget | None = limits.of(ctx).input if ctx is not None else None
        self.over_budget = False
        super().__init__(handler, **kwargs)
        if ctx is not None and getattr(listener, "auth", False) and ctx.config.oidc.issuer:
            # RFC 4954 4: an AUTH line may be 12,288 octets, room for a bearer token as the
            # initial response (aiosmtpd reads lines of 1,001 and commands of 512). DATA
            # keeps its own 1,001-octet line check (mssmail/smtp/data.py).
            # The StreamReader aiosmtpd made (asyncio's StreamReaderProtocol keeps it).
            reader: asyncio.StreamReader | None = getattr(self, "_stream_reader", None)
            if reader is not None:
                reader._limit = AUTH_LINE_LIMIT  # type: ignore[attr-defined]
            self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit,
                                                               {"AUTH": AUTH_LINE_LIMIT})

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's, without its cost for the common case: it defines a typing.Protocol
        class and runs the RFC 5322 parser on every MAIL and RCPT."""
        match = _SIMPLE_PATH.match(arg)
        after = arg[match.end():match.end() + 1] if match else ""
        if match is None or after == "(" or after.isspace():  # comments, odd spaces: the parser
            return super()._getaddr(arg)
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, arg[match.end():]

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with whole buffered lines read at once (`data.py`)."""
        if self._decode_data or not isinstance(getattr(self._reader, "_buffer", None), bytearray):
            await super().smtp_DATA(arg)
            return
        await data.smtp_DATA(self, arg)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        """aiosmtpd's, and the operator's log line for what the handler decided (a
        delivery, or a refusal of MAIL, RCPT or DATA: `mssmail.logs.smtp_outcome`)."""
        status = await super()._call_handler_hook(command, *args)
        if command in ("MAIL", "RCPT", "DATA") and isinstance(status, str) and self.envelope is not None:
            logs.smtp_outcome(getattr(self.listener, "name", "smtp"), self.peer_ip, command, status,
                              self.envelope.mail_from if command != "MAIL" else args[0],
                              args[0] if command == "RCPT" else self.envelope.rcpt_tos)
        return status

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(with_enhanced_code(status))
            return
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None and self._original_transport is None
        if first:
            peer = transport.get_extra_info("peername") or ("", 0)
            self.peer_ip = str(peer[0])
            if self.listener.closing:
                self.refused = True
                code, text = replies.SHUTTING_DOWN
                transport.write(f"{code} {text}\r\n".encode())  # type: ignore[attr-defined]
                transport.close()
                return
            self.listener.sessions.add(self)
        super().connection_made(transport)

    async def _handle_client(self) -> None:
        """aiosmtpd's session loop, once the per-IP limit admits the connection (the
        count may live in the parent process: asking it takes a round trip)."""
        if not await self.listener.admit(self):
            self.abort(replies.TOO_MANY_CONNECTIONS)
            return
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        self.listener.release(self)
        if self.input_budget is not None:
            self.input_budget.drop(self)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self.refused:
            return False
        return super().eof_received()

    def tls_info(self) -> tuple[str, str] | None:
        if self.transport is None:
            return None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        return (ssl_object.version() or "TLS", cipher[0] if cipher else "")

    def peer_certificate(self) -> dict[str, Any] | None:
        """The client certificate, present only if it verified against [trust] ca_files."""
        if self.transport is None:
            return None
        return self.transport.get_extra_info("peercert") or None

    def abort(self, reply: replies.Reply) -> None:
        """Shutdown: say 421 and drop the connection (RFC 5321 3.8)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(f"{reply[0]} {reply[1]}\r\n".encode())  # type: ignore[attr-defined]
            self.transport.close()


class SmtpListener:
    """A listening socket, its sessions, and their orderly shutdown."""

    def __init__(self, name: str, ctx: ServerContext, handler: Any, *, port: int, bind: str,
                 tls_context: ssl.SSLContext, auth: bool) -> None:
        self.name = name
        self.ctx = ctx
        self.handler = handler
        self.port = port
        self.bind = bind
        self.tls_context = tls_context
        self.auth = auth
        self.sessions: set[MssSMTP] = set()
        self.closing = False
        self.server: asyncio.AbstractServer | None = None
        self._adopting: set[asyncio.Task[Any]] = set()

    async def admit(self, session: MssSMTP) -> bool:
        ok: bool = await self.handler.gateway.admit(session.peer_ip)
        if ok and session not in self.sessions:  # gone while we asked
            self.handler.gateway.release(session.peer_ip)
            return False
        session.admitted = ok
        return ok

    def release(self, session: MssSMTP) -> None:
        self.sessions.discard(session)
        if session.admitted:
            session.admitted = False
            self.handler.gateway.release(session.peer_ip)

    def make_protocol(self) -> MssSMTP:
        config = self.ctx.config
        return MssSMTP(
            self.handler,
            listener=self,
            hostname=config.hostname,
            ident="mss ESMTP",
            data_size_limit=config.limits.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=self.tls_context,
            require_starttls=False,
            timeout=config.limits.smtp_timeout,
            auth_required=self.auth,
            auth_require_tls=True,
            auth_exclude_mechanism=(([] if config.oidc.issuer else list(sasl.MECHANISMS)) if self.auth
                                    else ["PLAIN", "LOGIN"]),
            command_call_limit=abuse.command_call_limits(config.limits),
            loop=self.ctx.loop,
        )

    async def start(self) -> list[str]:
        self.server = await self.ctx.loop.create_server(self.make_protocol, host=self.bind, port=self.port)
        port = self.server.sockets[0].getsockname()[1]
        what = "STARTTLS, AUTH after TLS" if self.auth else "STARTTLS"
        if not self.auth and self.ctx.config.trust.require_client_cert:
            what += ", client certificate required"
        return [f"{self.name}: listening on {self.bind}:{port} ({what})"]

    def adopt(self, connection: socket.socket) -> None:
        """A connection accepted by the parent process and handed to this SMTP worker."""
        connection.setblocking(False)
        task = self.ctx.loop.create_task(self.ctx.loop.connect_accepted_socket(self.make_protocol, sock=connection))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def stop(self, grace: float) -> None:
        self.closing = True
        if self.server is not None:
            self.server.close()
        deadline = self.ctx.loop.time() + grace
        while any(s.in_transaction for s in self.sessions) and self.ctx.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.abort(replies.SHUTTING_DOWN)
        if self.server is not None:
            await self.server.wait_closed()
