"""The webmail in a process of its own under `mss serve` (`[web] child_process = true`, the default).

Why: on one event loop the folder pages and the SMTP sessions take turns, and eight
browsers asking for pages without pause left the MX a sixth of its rate (84-85 % lost,
docs/performance.md "Webmail"; issue 14 allows 10 %). In two processes the kernel shares
the cores between them, and the web's memory is its own to measure. The store is the
same files or the same PostgreSQL database (DESIGN rule 4's scale-out: front ends in
several processes over one store); what the web changes, other processes see as they see
each other's, and at once: the child passes what its commits change to the parent
(`ChildNotices`), whose IMAP sessions, connectors and relay are woken as by their own.

    parent (`mss serve`)                     child (`python -m webmail.process`)
    binds [web] bind:port (one sentence      reads the checked config on stdin
      if it cannot)                          opens the store, installs the mail-flow plugins
    starts the child: the listening          serves HTTPS on the inherited socket
      socket and a status pipe inherited     writes {"line": ...} per listener, then
    prints the child's lines, then             {"ready": true}, or {"error": sentence}
      "mss ready"                            dies with the parent (PR_SET_PDEATHSIG)
    restarts it when it exits (backoff)      SIGTERM: lets requests in flight finish
    SIGTERM: SIGTERM to the child, waits       within [server] shutdown_grace
      grace + 10 s, then SIGKILL

The parent holds the listening socket for the whole run: connections arriving while
the child is restarted wait in the accept queue instead of being refused. The
connection limits (`mssmail/limits.py`) are per process: the child counts the web's
connections against its own descriptors, as the parent counts the other listeners'.

This module is imported by the parent: it imports nothing of the web stack (Starlette,
uvicorn, Jinja2), so the parent does not carry them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("mss.web")

START_TIMEOUT = 60.0
SUPERVISE_EVERY = 0.25
# A child that dies sooner than this after its start is restarted after a growing pause
# (1, 2, 4... up to 30 s) rather than at once: a crash at start must not spin a core.
STABLE_AFTER = 10.0
MAX_BACKOFF = 30.0
PR_SET_PDEATHSIG = 1
# The kernel's accept queue of the web port (uvicorn's default, which it used to set).
LISTEN_BACKLOG = 2048


def bind_listener(config: Any) -> socket.socket:
    """The web's listening socket, bound here so that a busy port is an OSError `mss serve`
    words in one sentence. IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on
    accepted sockets only when their proto says TCP, and a socket made with proto 0 passes
    0 on to them; without it every response waited on Nagle and delayed ACKs (44 ms,
    measured)."""
    host = config.bind_of(config.web) or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, config.web.port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        # Worded as asyncio words it, so that `startup_sentence` names the address.
        raise OSError(exc.errno, f"error while attempting to bind on address ('{host}', "
                                 f"{config.web.port}): {exc.strerror}") from exc
    return sock


class _Child:
    """One web process and what its supervision needs to know."""

    def __init__(self, index: int, process: subprocess.Popen[bytes]) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = process
        self.started_at = time.monotonic()
        self.backoff = 1.0


class ChildNotices:
    """What the child's commits changed, passed on to this process's subscribers.

    Why: an IMAP session in IDLE, the connector worker and the relay worker of `mss serve`
    learn of a change made in the same process at once (`store.changes`,
    `mssmail.queue.notify`), of one made elsewhere only at their next poll (`[imap]
    poll_interval`, `[relay] poll_interval`: seconds). The web child writes one JSON line
    per change on its status pipe after its ready line ({"changed": [mailbox_id,
    folder_id, kind]}, {"wake": "relay"}); read here on the loop, each is published as if
    this process had committed it (the child's commit is done before it writes, so what
    a subscriber reads is there). A line that does not read is logged and dropped: these
    are hints, and the polls stay the guarantee."""

    def __init__(self, store: Any, fd: int, pending: bytes) -> None:
        self.store, self.fd, self.pending = store, fd, pending

    def follow(self) -> None:
        """Read the pipe on this loop until the child closes it (it exits)."""
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        if b"\n" in self.pending:  # lines sent right behind the ready line
            self._lines(b"")

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            return
        self._lines(chunk)

    def _lines(self, chunk: bytes) -> None:
        from mssmail.queue import notify
        from mssmail.store.events import FolderChanged

        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for raw in lines:
            try:
                message = json.loads(raw)
                if "changed" in message:
                    mailbox_id, folder_id, kind = message["changed"]
                    self.store.changes.publish(FolderChanged(int(mailbox_id), int(folder_id), str(kind)))
                elif message.get("wake") == "relay":
                    notify.wake()
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("web process sent a notice that does not read: %s", exc)


class ParentNotifier:
    """The child's side of `ChildNotices`: its store's changes and its relay wakes, one
    line each on the status pipe. Subscribers run on the committing thread: the line is
    written from the loop. The pipe is non-blocking: when it is full (the parent's loop
    is behind) a notice is dropped rather than stall the web's loop, and the parent's
    polls pick the change up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop, self.fd = loop, fd
        os.set_blocking(fd, False)

    def changed(self, event: Any) -> None:
        line = json.dumps({"changed": [event.mailbox_id, event.folder_id, event.kind]})
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.write, line)

    def write(self, line: str) -> None:
        # One write of a line under PIPE_BUF (4,096 octets) is atomic (POSIX write(2)).
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.fd, (line + "\n").encode())

    async def relay_wakes(self) -> None:
        """`mssmail.queue.notify.wake()` in this process (mail queued by a send) as a
        line for the parent's relay worker."""
        from mssmail.queue import notify

        wake = asyncio.Event()
        notify.register(self.loop, wake)
        try:
            while True:
                await wake.wait()
                wake.clear()
                self.write(json.dumps({"wake": "relay"}))
        finally:
            notify.unregister(wake)


class WebProcess:
    """The `web` component of `mss serve` when the webmail runs in a child process. A
    list of children, though one: two web processes sharing the port were measured and
    gave nothing on two cores (268-289 against 294-320 pages/s, p95 53-57 against 44 ms,
    a 5,000-message box) for twice the memory; the list keeps that a one-line change."""

    name = "web"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.sock: socket.socket | None = None
        self.children: list[_Child] = []
        self.closing = False
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._restarting: set[asyncio.Task[None]] = set()

    async def start(self) -> list[str]:
        self.sock = bind_listener(self.ctx.config)
        try:
            process, lines = await self._spawn(0)
            self.children.append(_Child(0, process))
        except BaseException:
            await self.stop(0)
            raise
        self._supervisor = asyncio.ensure_future(self._supervise())
        return lines

    async def _spawn(self, index: int) -> tuple[subprocess.Popen[bytes], list[str]]:
        """Start a child and wait for its ready line (its listener lines) or its error
        sentence; a RuntimeError carrying that sentence otherwise."""
        assert self.sock is not None
        status_read, status_write = os.pipe()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "webmail.process", str(os.getpid()), str(self.sock.fileno()),
                 str(status_write), str(index)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(self.sock.fileno(), status_write),
                env=env)
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
        assert process.stdin is not None
        try:
            process.stdin.write(self.ctx.config.model_dump_json().encode())
            process.stdin.close()
        except OSError:  # the child died at once; its exit is reported below
            pass
        os.set_blocking(status_read, False)
        buffer = b""
        lines: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    chunk = os.read(status_read, 65536)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    buffer += chunk
                    while b"\n" in buffer:
                        raw, buffer = buffer.split(b"\n", 1)
                        message = json.loads(raw)
                        if "line" in message:
                            lines.append(str(message["line"]))
                        elif "error" in message:
                            # Off the loop: the child may take seconds to close its store,
                            # and a restart happens while mss serve serves mail.
                            await asyncio.to_thread(self._reap, process)
                            raise RuntimeError(str(message["error"]))
                        elif message.get("ready"):
                            ChildNotices(self.ctx.store, status_read, buffer).follow()
                            status_read = -1  # the notices own it now
                            return process, lines
                    continue
                if chunk == b"" or process.poll() is not None:  # EOF: the child is gone
                    code = await asyncio.to_thread(self._reap, process)
                    raise RuntimeError(f"the web process exited with code {code} while starting "
                                       f"(see the log)")
                if time.monotonic() > deadline:
                    self._reap(process, kill=True)
                    raise RuntimeError(f"the web process did not start within {int(START_TIMEOUT)} seconds")
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:  # mss serve stops while this child starts
            self._reap(process, kill=True)
            raise
        finally:
            if status_read >= 0:
                os.close(status_read)

    @staticmethod
    def _reap(process: subprocess.Popen[bytes], kill: bool = False) -> int:
        if kill and process.poll() is None:
            process.kill()
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    async def _supervise(self) -> None:
        """Start a child again when it exits while `mss serve` runs."""
        while not self.closing:
            await asyncio.sleep(SUPERVISE_EVERY)
            for child in self.children:
                if self.closing:
                    return
                code = None if child.process is None else child.process.poll()
                if code is None:
                    continue
                child.process = None
                if time.monotonic() - child.started_at > STABLE_AFTER:
                    pause, child.backoff = 0.0, 1.0
                else:
                    pause, child.backoff = child.backoff, min(child.backoff * 2, MAX_BACKOFF)
                log.error("web process exited with code %s; starting it again%s", code,
                          f" in {pause:.0f} s" if pause else "")
                task = asyncio.ensure_future(self._restart(child, pause))
                self._restarting.add(task)
                task.add_done_callback(self._restarting.discard)

    async def _restart(self, child: _Child, pause: float) -> None:
        while not self.closing:
            if pause:
                await asyncio.sleep(pause)
            if self.closing:
                return
            child.started_at = time.monotonic()
            try:
                child.process, _lines = await self._spawn(child.index)
                self.restarts += 1
                return
            except Exception as exc:
                log.error("web process could not be started again: %s", exc)
                pause, child.backoff = child.backoff, min(child.backoff * 2, MAX_BACKOFF)

    async def stop(self, grace: float) -> None:
        """SIGTERM to the children (each lets requests in flight finish within `grace`),
        then SIGKILL to one still there 10 s after that."""
        self.closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._restarting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + 10
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for process in running:
            if process.poll() is None:
                log.error("web process did not stop in time; killed")
                process.kill()
            process.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def web_component(ctx: Any) -> Any:
    """`mss serve`'s web component: the child process by default, the webmail on this
    loop with `[web] child_process = false`; None when `[web] port = 0`."""
    if not ctx.config.web.port:
        return None
    if ctx.config.web.child_process:
        return WebProcess(ctx)
    from webmail.app import WebComponent

    return WebComponent(ctx)


# --- the child -------------------------------------------------------------------------

def die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent dies, as if `kill -9` had hit this process too (Linux);
    elsewhere `_watch_parent` notices within a second."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent_pid:
            stop.set()
            return
        await asyncio.sleep(1.0)


def _send(status: Any, **message: Any) -> None:
    status.write(json.dumps(message) + "\n")
    status.flush()


async def _serve_child(config: Any, sock: socket.socket, parent_pid: int, status: Any) -> int:
    """Open the store, start the web component on the inherited socket, report, serve
    until SIGTERM or the parent's end."""
    from mssmail.service import ServerContext, StartupError, install_plugins, startup_sentence
    from mssmail.store.service import Store

    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = 0.05  # as `mss serve` (issue 14: no callback over 50 ms)
    store = None
    component = None
    try:
        try:
            store = Store.from_config(config)
            store.migrate()  # the parent migrated already: only the check that the schema is current
            install_plugins(store, config)
            ctx = ServerContext(config=config, store=store, loop=loop)
            from webmail.app import WebComponent

            component = WebComponent(ctx, sock=sock)
            lines = await component.start()
        except Exception as exc:
            # The parent logs it (`serve.error`) and says it on stderr.
            _send(status, error=str(exc) if isinstance(exc, StartupError) else startup_sentence(exc))
            return 1
        # What start-up made (modules, the app, the templates: about 110,000 objects) lives
        # as long as the process: out of the collector's reach, a full collection no longer
        # walks it on the loop (24-33 ms each before, 0.0 ms after, measured here; issue 14
        # allows no callback over 50 ms).
        gc.collect()
        gc.freeze()
        for line in lines:
            _send(status, line=line)
        _send(status, ready=True)
        notifier = ParentNotifier(loop, status.fileno())
        unsubscribe = store.changes.subscribe_all(notifier.changed)
        relay_wakes = asyncio.ensure_future(notifier.relay_wakes())
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        watcher = asyncio.ensure_future(_watch_parent(parent_pid, stop))
        await stop.wait()
        watcher.cancel()
        relay_wakes.cancel()
        unsubscribe()
        return 0
    finally:
        if component is not None:
            try:
                await component.stop(float(config.server.shutdown_grace))
            except Exception:
                log.exception("stopping the web component failed")
        if store is not None:
            store.close()


def main(argv: list[str]) -> int:
    """`python -m webmail.process PARENT_PID LISTEN_FD STATUS_FD INDEX < config.json`
    (INDEX: which of the component's children, for `ps`)."""
    parent_pid, listen_fd, status_fd, _index = (int(a) for a in argv)
    die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group: the parent decides, then sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = os.fdopen(status_fd, "w", buffering=1)
    try:
        from mssmail import logs
        from mssmail.config import Config

        config = Config.model_validate_json(sys.stdin.buffer.read())
        # This process serves the web itself (the setting read as the parent left it would
        # start a grandchild).
        config.web.child_process = False
        # JSON lines to stderr and DATA/logs/mss.log, which the main process rotates.
        logs.configure(config, process="web", rotate=False)
        if config.web.nice:
            os.nice(config.web.nice)
        sock = socket.socket(fileno=listen_fd)
        sock.setblocking(False)
    except Exception as exc:  # one sentence for the parent, never a traceback
        from mssmail.service import startup_sentence

        _send(status, error=startup_sentence(exc))
        return 1
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve_child(config, sock, parent_pid, status))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
