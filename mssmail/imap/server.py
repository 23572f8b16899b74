"""The IMAP and IMAPS listeners of `mss serve`: sockets, TLS, framing, IDLE, shutdown.

The protocol itself lives in sans-IO modules (`wire` frames bytes into commands,
`grammar` parses them) and in `session.Session` (what each command does to the store).
This module only moves bytes: it reads, feeds the framer, hands each complete command
to the session, upgrades to TLS on STARTTLS, and during IDLE waits for the client's
DONE *or* a change to the selected folder (published by the store in this process, and
polled every `[imap] poll_interval` seconds for changes made by other processes).

Why not `twisted.mail.imap4.IMAP4Server` (the design note's first choice): its parser
has no hook for literal and line limits before buffering, for LITERAL+, or for command
modifiers (CONDSTORE's CHANGEDSINCE/UNCHANGEDSINCE, ESEARCH's RETURN), and its mailbox
interfaces fetch one message object at a time, which made a 100,000-message SELECT and
FETCH far slower than our targets. The protocol is therefore ours and sans-IO (DESIGN
rule 3); it still runs on the shared asyncio loop with the Twisted reactor installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mssmail import limits, oidc
from mssmail.imap.grammar import NOT_AUTH
from mssmail.imap.session import Bye, Outcome, Session, SessionSettings
from mssmail.imap.wire import Command, CommandReader, Continue, Event, Fatal, Refused
from mssmail.tls import server_context

if TYPE_CHECKING:
    from mssmail.service import ServerContext

log = logging.getLogger("mss.imap")

READ_SIZE = 256 * 1024
HANDSHAKE_TIMEOUT = 30
# After LOGOUT or BYE, our TLS close_notify is sent and the socket closed at the latest this
# many seconds later, whether or not the client answers with its own (asyncio waits 30 s by
# default: imaptest, which waits for the server to close first, sat out the whole wait).
# Implicit TLS only: StreamWriter.start_tls (STARTTLS) takes no such setting before 3.12.
SHUTDOWN_TIMEOUT = 2


class ImapConnection:
    def __init__(self, listener: ImapListener, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, implicit_tls: bool) -> None:
        self.listener = listener
        self.reader = reader
        self.writer = writer
        config = listener.ctx.config
        peer = writer.get_extra_info("peername") or ("", 0)
        self.peer_ip = str(peer[0])
        self.session = Session(listener.ctx.store, listener.settings, self.send, peer_ip=self.peer_ip,
                               tls=implicit_tls)
        self.framer = CommandReader(config.limits.imap_max_line, config.limits.imap_max_literal)
        self.budget = limits.of(listener.ctx).input
        self._framing_preauth: bool | None = None
        self.loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()
        self.session.on_change = lambda: self.loop.call_soon_threadsafe(self.changed.set)
        self._read_task: asyncio.Future[bytes] | None = None
        self.pending: Outcome | None = None  # a command waiting for a line (SASL, IDLE's DONE)
        self.busy = False  # a command is being executed
        self.idling = False
        self.closed = False

    async def send(self, data: bytes) -> None:
        if self.closed:
            return
        self.writer.write(data)
        await self.writer.drain()

    async def run(self) -> None:
        try:
            await self.send(self.session.greeting())
            await self._loop()
        except Bye as exc:
            with contextlib.suppress(Exception):
                await self.send(f"* BYE {exc}\r\n".encode())
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.debug("IMAP connection from %s ended: %s", self.peer_ip, exc)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await self.send(b"* BYE autologout: idle for too long\r\n")
        except Exception:
            log.exception("IMAP connection from %s failed", self.peer_ip)
        finally:
            await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.budget.drop(self)
        self.session.close()
        if self._read_task is not None:
            self._read_task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)

    def _timeout(self) -> float:
        if self.session.state == NOT_AUTH:
            return float(self.listener.ctx.config.limits.preauth_timeout)
        return float(self.listener.ctx.config.limits.imap_idle_timeout)

    async def _read(self) -> bytes:
        """The next bytes from the client; while idling, also report folder changes."""
        if self._read_task is None:
            self._read_task = asyncio.ensure_future(self.reader.read(READ_SIZE))
        deadline = self.loop.time() + self._timeout()
        poll = max(float(self.listener.ctx.config.imap.poll_interval), 0.2)
        while True:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise TimeoutError
            waits: set[asyncio.Future[object]] = {self._read_task}  # type: ignore[arg-type]
            wake = None
            if self.idling:
                wake = asyncio.ensure_future(self.changed.wait())
                waits.add(wake)  # type: ignore[arg-type]
            done, _ = await asyncio.wait(waits, timeout=min(remaining, poll) if self.idling else remaining,
                                         return_when=asyncio.FIRST_COMPLETED)
            if wake is not None:
                wake.cancel()
            if self._read_task in done:
                task, self._read_task = self._read_task, None
                return b"" if task.cancelled() else task.result()
            if self.idling:
                self.changed.clear()
                await self.session.sync(allow_expunge=True)

    def _frame_for_state(self) -> None:
        """The framer's limits for the session's state: before login a literal can only be a
        LOGIN or AUTHENTICATE argument, so it is small ([limits] imap_max_literal_preauth; Dovecot
        bounds pre-login input the same way); an unfinished {62000000+} is refused at once."""
        preauth = self.session.state == NOT_AUTH
        if preauth == self._framing_preauth:
            return
        self._framing_preauth = preauth
        cfg = self.listener.ctx.config.limits
        literal = cfg.imap_max_literal_preauth if preauth else cfg.imap_max_literal
        self.framer.max_literal = literal
        self.framer.max_command = (2 * literal if preauth else literal) + 4 * cfg.imap_max_line

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        """`data` line by line while the client has not logged in, then the rest at once: a
        command pipelined after LOGIN is framed with the limits of the state LOGIN leads to
        (the generator reads the state when asked for the next piece)."""
        start = 0
        while start < len(data):
            if self.session.state != NOT_AUTH:
                yield data[start:]
                return
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end + 1
            yield data[start:end]
            start = end

    async def _loop(self) -> None:
        while not self.closed:
            data = await self._read()
            if not data:
                return
            for piece in self._pieces(data):
                self._frame_for_state()
                events = self.framer.feed(piece)
                # A literal counts from its announcement: before "+" is sent for it.
                if not self.budget.hold(self, self.framer.committed):
                    events = await self._over_budget(events)
                after = await self._run_events(events)
                if after == "end":
                    return
                if after == "drop":
                    break  # anything sent with STARTTLS in plaintext is dropped

    async def _over_budget(self, events: list[Event]) -> list[Event]:
        """The process's input budget would be crossed by this connection. A synchronizing
        literal just announced is refused with a tagged NO (its octets were never asked
        for, the session goes on); anything else is already on its way: the connection ends."""
        if not events or not isinstance(events[-1], Continue):
            raise Bye("[UNAVAILABLE] server busy: too much unfinished input, try again later")
        tag = (self.framer.cancel_literal() or b"*").decode("ascii", "replace")
        self.budget.hold(self, self.framer.committed)
        await self.send(f"{tag} NO [UNAVAILABLE] Server busy: too much unfinished input, "
                        "try again later\r\n".encode())
        return events[:-1]

    async def _run_events(self, events: list[Event]) -> str:
        """Answer the framed events: "more", "drop" (the rest of this read is not to be trusted:
        TLS has just started) or "end" (LOGOUT)."""
        timeout = float(self.listener.ctx.config.imap.command_timeout)
        for event in events:
            if isinstance(event, Continue):
                await self.send(b"+ go ahead\r\n")
            elif isinstance(event, Refused):
                code = f"[{event.code}] " if event.code else ""
                tag = event.tag.decode("ascii", "replace") if event.tag else "*"
                await self.send(f"{tag} BAD {code}{event.reason}\r\n".encode())
            elif isinstance(event, Fatal):
                raise Bye(event.reason)
            elif isinstance(event, Command):
                if self.pending is not None:
                    outcome, self.pending = self.pending, None
                    self.idling = False
                    if outcome.action == "sasl":
                        more = await self.session.sasl_response(outcome.data, event.raw)
                        if more is not None and more.action == "sasl":  # one more client line
                            self.pending = more
                    else:
                        await self.session.idle_done(outcome.data, event.raw)
                    continue
                if self.listener.closing:
                    raise Bye("server shutting down")
                self.busy = True
                try:
                    outcome = await asyncio.wait_for(self.session.execute(event.raw), timeout)
                except TimeoutError:
                    raise Bye("command timed out") from None
                finally:
                    self.busy = False
                if outcome.action == "logout":
                    return "end"
                if outcome.action == "starttls":
                    await self._starttls(outcome.tag)
                    return "drop"
                if outcome.action in ("sasl", "idle"):
                    self.pending = outcome
                    self.idling = outcome.action == "idle"
                    self.changed.clear()
        return "more"

    async def _starttls(self, tag: str) -> None:
        # Stop reading before the OK: what the client sends after it (its ClientHello)
        # must stay in the socket for the TLS layer. Plaintext already received after
        # STARTTLS (pipelined, or injected by a man in the middle) is dropped.
        self.writer.transport.pause_reading()  # type: ignore[attr-defined]
        self.framer.reset()
        buffered = getattr(self.reader, "_buffer", None)
        if buffered is not None:
            buffered.clear()
        await self.send(f"{tag} OK begin TLS negotiation now\r\n".encode())
        await self.writer.start_tls(self.listener.tls_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.session.tls = True


class ImapListener:
    """The IMAP (STARTTLS) and IMAPS (implicit TLS) sockets and their sessions."""

    name = "imap"

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.tls_context = server_context(config)
        self.settings = SessionSettings(hostname=config.hostname,
                                        max_literal=config.limits.imap_max_literal,
                                        tls_available=True, bearer=oidc.bearer_auth(config))
        self.connections: set[ImapConnection] = set()
        self.gates = {"imap": limits.of(ctx).listener("imap"), "imaps": limits.of(ctx).listener("imaps")}
        self.servers: list[asyncio.AbstractServer] = []
        self.closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     implicit_tls: bool) -> None:
        """One connection, counted from its accept (mssmail/limits.py): an IMAPS peer that never
        finishes its TLS handshake holds a slot too, so the handshake starts only once admitted."""
        gate = self.gates["imaps" if implicit_tls else "imap"]
        peer_ip = str((writer.get_extra_info("peername") or ("", 0))[0])
        refusal = "server shutting down" if self.closing else gate.refusal(peer_ip)
        if refusal is not None:
            if not implicit_tls:  # a TLS client would not understand plaintext
                with contextlib.suppress(Exception):
                    writer.write(f"* BYE {refusal}\r\n".encode())
                    await writer.drain()
            writer.close()
            return
        try:
            if implicit_tls:
                try:
                    # A peer that connects and never says a word waits no longer than one that
                    # does not log in.
                    handshake = min(HANDSHAKE_TIMEOUT, self.ctx.config.limits.preauth_timeout)
                    await _start_implicit_tls(writer, self.tls_context, handshake)
                except (ConnectionError, ssl.SSLError, OSError, TimeoutError) as exc:
                    log.debug("IMAPS handshake with %s failed: %s", peer_ip, exc)
                    writer.close()
                    return
            connection = ImapConnection(self, reader, writer, implicit_tls=implicit_tls)
            self.connections.add(connection)
            try:
                await connection.run()
            finally:
                self.connections.discard(connection)
        finally:
            gate.release(peer_ip)

    def _protocol(self, implicit_tls: bool) -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=READ_SIZE)
        return _AcceptedProtocol(reader, lambda r, w: self._serve(r, w, implicit_tls), implicit_tls)

    async def start(self) -> list[str]:
        config = self.ctx.config
        loop = asyncio.get_running_loop()
        lines = []
        if config.imap.port:
            server = await loop.create_server(lambda: self._protocol(False), host=config.bind_of(config.imap),
                                              port=config.imap.port)
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            lines.append(f"imap: listening on {config.bind_of(config.imap)}:{port} "
                         "(STARTTLS, LOGINDISABLED before TLS)")
        if config.imaps.port:
            server = await loop.create_server(lambda: self._protocol(True), host=config.bind_of(config.imaps),
                                              port=config.imaps.port)
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            lines.append(f"imaps: listening on {config.bind_of(config.imaps)}:{port} (implicit TLS)")
        return lines

    async def stop(self, grace: float) -> None:
        self.closing = True
        for server in self.servers:
            server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.busy for c in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.send(b"* BYE server shutting down\r\n"), 1)
            await connection.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)


def imap_component(ctx: ServerContext) -> ImapListener | None:
    config = ctx.config
    if not config.imap.port and not config.imaps.port:
        return None
    return ImapListener(ctx)


class _AcceptedProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, with reading paused from the accept on an implicit-TLS port:
    the ClientHello must stay in the socket until the connection is admitted and `start_tls`
    hands it to the TLS layer (read early, it would be lost in the plaintext buffer)."""

    def __init__(self, reader: asyncio.StreamReader, connected: Any, implicit_tls: bool) -> None:
        super().__init__(reader, connected)
        self._implicit_tls = implicit_tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._implicit_tls:
            transport.pause_reading()  # type: ignore[attr-defined]
        super().connection_made(transport)


async def _start_implicit_tls(writer: asyncio.StreamWriter, context: ssl.SSLContext, handshake: float) -> None:
    """`writer.start_tls` as Python 3.12 has it, with SHUTDOWN_TIMEOUT (3.11's takes none): the
    TLS layer goes under the admitted connection's stream protocol."""
    protocol = writer._protocol  # type: ignore[attr-defined]
    transport = await asyncio.get_running_loop().start_tls(
        writer.transport, protocol, context, server_side=True,
        ssl_handshake_timeout=handshake, ssl_shutdown_timeout=SHUTDOWN_TIMEOUT)
    writer._transport = transport  # type: ignore[attr-defined]
    protocol._replace_writer(writer)
