"""SMTP worker processes: `[smtp] workers = N` (and `[submission] workers`).

Why: TLS and the SMTP dialogue are Python work on one event loop, and the store's
threads (blob writes, commits) want the same interpreter lock; on a 2-core machine
one process tops out near one core. Here `mss serve` listens, accepts, and hands each
connection in turn to one of N workers (`python -m mssmail.smtp.worker`; a socket
pair carries the descriptor, SCM_RIGHTS): had the workers shared the listening
socket, the first one awake would take a whole burst of connections. Each worker does
TLS, SMTP and policy, writes the message's blob, and sends every store operation to
this process over a second socket pair (`gateway.py`). The store, its group commit
and the audit chain stay in this one process: a worker answers 250 only after this
process has committed (blob fsynced, row and audit event committed).

Lifecycle: a worker dies with this process (PR_SET_PDEATHSIG, and the socket pair's
EOF), so after `kill -9` of `mss serve` nothing unanswered was acknowledged. A
worker that exits unexpectedly is started again. SIGTERM: this process stops the
workers with SIGTERM, each lets transactions in flight finish (or says 421 at the
end of the grace period), while this process keeps serving their store requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from mssmail.smtp.gateway import GatewayServer
from mssmail.smtp.server import SmtpListener

log = logging.getLogger("mss.smtp")
START_TIMEOUT = 60.0
ACCEPT_QUEUE = 1024
SUPERVISE_EVERY = 0.5


class Worker:
    def __init__(self, index: int, process: subprocess.Popen[bytes], channel: asyncio.Task[None],
                 handoff: socket.socket) -> None:
        self.index = index
        self.process = process
        self.channel = channel
        self.handoff = handoff  # connections go to the worker through this datagram socket


class WorkerPool:
    """A listening socket shared by worker processes, and their supervision."""

    def __init__(self, template: SmtpListener, count: int) -> None:
        self.template = template  # its name, address, and gateway (the per-IP count)
        self.name = template.name
        self.ctx = template.ctx
        self.count = count
        self.workers: list[Worker] = []
        self.sock: socket.socket | None = None
        self.closing = False
        self._next = 0
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> list[str]:
        bind = self.template.bind
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.sock = socket.create_server((bind, self.template.port), family=family, backlog=ACCEPT_QUEUE)
        self.sock.setblocking(False)
        for index in range(self.count):
            self.workers.append(await self._spawn(index))
        self._supervisor = asyncio.ensure_future(self._supervise())
        self.ctx.loop.add_reader(self.sock.fileno(), self._accept)
        port = self.sock.getsockname()[1]
        what = "STARTTLS, AUTH after TLS" if self.template.auth else "STARTTLS"
        if not self.template.auth and self.ctx.config.trust.require_client_cert:
            what += ", client certificate required"
        return [f"{self.name}: listening on {bind}:{port} ({what}; {self.count} worker processes)"]

    def _accept(self) -> None:
        """Take every waiting connection; give each to the next live worker in turn."""
        assert self.sock is not None
        while not self.closing:
            try:
                connection, _address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.exception("%s: accept failed", self.name)
                return
            with connection:
                for _ in range(len(self.workers)):
                    worker = self.workers[self._next % len(self.workers)]
                    self._next += 1
                    if worker.process.poll() is not None:
                        continue
                    try:
                        socket.send_fds(worker.handoff, [b"c"], [connection.fileno()])
                        break
                    except OSError:
                        continue  # that worker is not reading: try the next one
                else:
                    log.error("%s: no worker took a connection; closed", self.name)

    async def _spawn(self, index: int) -> Worker:
        ours, theirs = socket.socketpair()
        handoff, their_handoff = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        handoff.setblocking(False)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(
            [sys.executable, "-m", "mssmail.smtp.worker", self.name, str(index), str(os.getpid()),
             str(their_handoff.fileno()), str(theirs.fileno())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(their_handoff.fileno(), theirs.fileno()),
            env=env)
        theirs.close()
        their_handoff.close()
        assert process.stdin is not None
        process.stdin.write(self.ctx.config.model_dump_json().encode())
        process.stdin.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        ready: asyncio.Future[None] = self.ctx.loop.create_future()

        def on_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        server = GatewayServer(self.template.handler.gateway)
        channel = asyncio.ensure_future(server.serve(reader, writer, on_ready))
        deadline = self.ctx.loop.time() + START_TIMEOUT
        while not ready.done():
            if process.poll() is not None or self.ctx.loop.time() > deadline:
                process.kill()
                process.wait()
                channel.cancel()
                handoff.close()
                raise RuntimeError(f"{self.name} worker {index} did not start (see the log)")
            await asyncio.wait({ready}, timeout=0.05)
        return Worker(index, process, channel, handoff)

    async def _supervise(self) -> None:
        while not self.closing:
            await asyncio.sleep(SUPERVISE_EVERY)
            for position, worker in enumerate(self.workers):
                code = worker.process.poll()
                if code is None or self.closing:
                    continue
                log.error("%s worker %d exited with %s; starting it again", self.name, worker.index, code)
                with contextlib.suppress(TimeoutError):  # on timeout wait_for cancels it
                    await asyncio.wait_for(worker.channel, 5)  # gives back its connection counts
                worker.handoff.close()
                try:
                    self.workers[position] = await self._spawn(worker.index)
                except Exception:
                    log.exception("%s worker %d could not be started again", self.name, worker.index)

    async def stop(self, grace: float) -> None:
        """SIGTERM to every worker; they drain while we keep serving their requests."""
        self.closing = True
        if self.sock is not None:
            self.ctx.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        if self._supervisor is not None:
            self._supervisor.cancel()
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = self.ctx.loop.time() + grace + 10
        while any(w.process.poll() is None for w in self.workers) and self.ctx.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if worker.process.poll() is None:
                log.error("%s worker %d did not stop in time; killed", self.name, worker.index)
                worker.process.kill()
                worker.process.wait()
        await asyncio.gather(*(w.channel for w in self.workers), return_exceptions=True)
        for worker in self.workers:
            worker.handoff.close()
