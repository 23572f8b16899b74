"""One SMTP worker process (started by `workers.WorkerPool`, not by hand).

    python -m mssmail.smtp.worker SERVICE INDEX PARENT_PID HANDOFF_FD CHANNEL_FD < config.json

It takes the connections `mss serve` accepted and hands over (HANDOFF_FD, SCM_RIGHTS),
speaks TLS and SMTP, and asks the parent for every store operation through the channel. It imports no
store code (no SQLAlchemy, no argon2): a small process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys

from mssmail import logs
from mssmail.config import Config
from mssmail.service import ServerContext
from mssmail.smtp.gateway import RemoteGateway
from mssmail.smtp.listener import mx_listener, submission_listener
from mssmail.smtp.server import SmtpListener
from mssmail.store.blobs import BlobStore

PR_SET_PDEATHSIG = 1
log = logging.getLogger("mss.smtp")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent dies, as if `kill -9` had hit this process too (Linux)."""
    with contextlib.suppress(OSError, AttributeError):  # elsewhere the channel's EOF ends the worker
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def take_connections(handoff: socket.socket, listener: SmtpListener) -> None:
    """Every descriptor waiting on the hand-over socket becomes an SMTP session."""
    while True:
        try:
            _message, fds, _flags, _address = socket.recv_fds(handoff, 16, 8)
        except (BlockingIOError, InterruptedError):
            return
        if not fds:
            return
        for fd in fds:
            connection = socket.socket(fileno=fd)
            if listener.closing:
                connection.close()
            else:
                listener.adopt(connection)


async def serve(config: Config, service: str, handoff_fd: int, channel_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=channel_fd))
    gateway = RemoteGateway(reader, writer, BlobStore(config.path("blobs")))
    replies = asyncio.ensure_future(gateway.read_replies())
    ctx = ServerContext(config=config, store=None, loop=loop)
    make = mx_listener if service == "smtp" else submission_listener
    listener = make(ctx, gateway)
    handoff = socket.socket(fileno=handoff_fd)
    handoff.setblocking(False)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(handoff.fileno(), take_connections, handoff, listener)
    gateway.notify("ready")
    await stop.wait()
    loop.remove_reader(handoff.fileno())
    await listener.stop(float(config.server.shutdown_grace))
    replies.cancel()


def main(argv: list[str]) -> int:
    service, index, parent_pid, handoff_fd, channel_fd = argv
    die_with_parent(int(parent_pid))
    # Ctrl-C reaches the whole process group: the parent decides, then sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = Config.model_validate_json(sys.stdin.buffer.read())
    # JSON lines to stderr and DATA/logs/mss.log, which the main process rotates.
    logs.configure(config, process=f"{service} worker {index}", rotate=False)
    asyncio.run(serve(config, service, int(handoff_fd), int(channel_fd)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
