"""`mss serve`: every listener in one process, on one asyncio loop shared with Twisted.

Twisted's asyncio reactor is installed before anything imports the reactor, so the
Twisted-based IMAP and LDAP servers and the asyncio-based SMTP servers and web app run
on the same loop (DESIGN rule 5). A `--only` selection without a Twisted-based service
(`--only web`, `--only smtp,web`...) runs on the plain asyncio loop and never imports
Twisted (about 8 MB of resident memory, issue 14). Each capability is a *component*: an object with
`async start() -> list[str]` (one line per listener, printed) and
`async stop(grace: float)` (stop accepting, let work in flight finish within `grace`).
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mssmail.config import Config

log = logging.getLogger("mss.service")

# Service name -> "module:factory". A factory takes a ServerContext and returns a
# component, or None when the configuration disables it (port 0).
COMPONENTS: dict[str, str] = {
    "smtp": "mssmail.smtp.listener:mx_component",
    "submission": "mssmail.smtp.listener:submission_component",
    "relay": "mssmail.queue.worker:relay_component",
    "imap": "mssmail.imap.server:imap_component",
    "ldap": "directory.server:ldap_component",
    "web": "webmail.process:web_component",
    "connectors": "connectors.worker:connectors_component",
    "index": "mssmail.store.fts:index_component",
    "automail": "mssmail.delivery.automail:automail_component",
}


# The services whose servers are Twisted protocols: `serve` runs the reactor only for these.
TWISTED_SERVICES = frozenset({"imap", "ldap"})


def needs_twisted(only: Sequence[str] | None) -> bool:
    return not only or any(name in TWISTED_SERVICES for name in only)


class Component(Protocol):
    name: str

    async def start(self) -> list[str]: ...

    async def stop(self, grace: float) -> None: ...


@dataclass
class ServerContext:
    config: Config
    store: Any  # mssmail.store.service.Store
    loop: asyncio.AbstractEventLoop
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    components: dict[str, Component] = field(default_factory=dict)
    limits: Any = None  # mssmail.limits.Limits: the listeners' shared counters (made on first use)


class StartupError(Exception):
    """A service could not start; the message is one sentence for the operator."""

    def __init__(self, service: str, sentence: str) -> None:
        super().__init__(sentence)
        self.service = service


_ASYNCIO_ADDRESS = re.compile(r"\('?([^',()]+)'?, (\d+)(?:, \d+, \d+)?\)")


def startup_sentence(exc: BaseException) -> str:
    """One sentence for why a listener could not start: `Couldn't listen on
    127.0.0.1:2389: address already in use`, from asyncio's and Twisted's errors alike."""
    interface = getattr(exc, "interface", None)
    port = getattr(exc, "port", None)
    cause = getattr(exc, "socketError", None) or exc
    code = getattr(cause, "errno", None)
    if code is None and cause.args and isinstance(cause.args[0], int):
        code = cause.args[0]
    if interface is None and isinstance(exc, OSError):
        match = _ASYNCIO_ADDRESS.search(str(exc))
        if match:
            interface, port = match.group(1), match.group(2)
    reasons = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied",
               errno.EADDRNOTAVAIL: "address not available on this host"}
    if port is not None and code in reasons:
        return f"Couldn't listen on {interface or '0.0.0.0'}:{port}: {reasons[code]}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    text = str(exc).strip().rstrip(".") or exc.__class__.__name__
    return text.splitlines()[0]


def install_reactor(loop: asyncio.AbstractEventLoop) -> None:
    """Install Twisted's asyncio reactor on `loop` (must happen before any reactor import)."""
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        if type(reactor).__name__ != "AsyncioSelectorReactor":
            raise RuntimeError("a Twisted reactor other than asyncio's was installed first")
        return
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)


def resolve(spec: str) -> Callable[[ServerContext], Component | None] | None:
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    return getattr(module, attr, None)


async def run_components(ctx: ServerContext, only: Sequence[str] | None,
                         out: Callable[[str], None]) -> int:
    names = list(only) if only else list(COMPONENTS)
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown service {', '.join(unknown)} (known: {', '.join(COMPONENTS)})")
    started: list[Component] = []
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        ctx.loop.add_signal_handler(sig, stop_requested.set)
    try:
        for name in names:
            factory = resolve(COMPONENTS[name])
            if factory is None:
                if only:
                    out(f"{name}: not available in this build")
                continue
            try:
                component = factory(ctx)
                if component is None:
                    continue
                lines = await component.start()
            except Exception as exc:
                raise StartupError(name, startup_sentence(exc)) from exc
            for line in lines:
                out(line)
            started.append(component)
            ctx.components[name] = component
        out(f"mss ready: {len(started)} service(s) running; SIGTERM stops")
        checkpoints = asyncio.ensure_future(checkpoint_schedule(ctx))
        try:
            await stop_requested.wait()
        finally:
            checkpoints.cancel()
    finally:
        ctx.shutting_down.set()
        grace = float(ctx.config.server.shutdown_grace)
        for component in reversed(started):
            try:
                await component.stop(grace)
            except Exception:
                log.exception("stopping %s failed", component.name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            ctx.loop.remove_signal_handler(sig)
    out("mss stopped")
    return 0


async def checkpoint_schedule(ctx: ServerContext) -> None:
    """Every `[audit] checkpoint_interval`, a signed checkpoint of the audit chain's head
    into `[audit] checkpoint_dir` (when the chain has grown since the last one), and an
    `audit.checkpoint` log line: both are anchors outside the database."""
    from mssmail import audit, logs

    interval = ctx.config.audit.checkpoint_interval
    if interval <= 0:
        return
    directory = ctx.config.path(ctx.config.audit.checkpoint_dir)
    pki = ctx.config.path("pki")
    last: tuple[int, str] | None = None

    def write() -> tuple[Path, int, str] | None:
        with ctx.store.db.read() as session:
            head = audit.head(session)
            if head == last:
                return None
            return audit.write_checkpoint(session, pki, directory), *head

    while True:
        await asyncio.sleep(interval)
        try:
            written = await ctx.store.run(write)
        except Exception as exc:
            log.error("audit checkpoint failed: %s", startup_sentence(exc))
            continue
        if written is not None:
            path, seq, digest = written
            last = (seq, digest)
            logs.event(logs.AUDIT_CHECKPOINT, seq=seq, hash=digest, path=str(path))


def install_plugins(store: Any, config: Config) -> list[str]:
    """Let optional components hook into the mail flow (crypto: sign, verify, decrypt)."""
    lines: list[str] = []
    for module_name in ("crypto.mailflow",):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        lines.extend(module.install(store, config))
    return lines


def serve(config: Config, only: Sequence[str] | None = None,
          out: Callable[[str], None] = print) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    from mssmail.limits import raise_open_files_limit

    # Before any listener or worker process exists: the connection limits are set from this
    # ceiling, and the SMTP workers inherit it.
    raise_open_files_limit()
    loop = asyncio.new_event_loop()
    # Issue 14: no loop callback over 50 ms. asyncio's debug mode (PYTHONASYNCIODEBUG=1,
    # as bench/webmail_bench.py --loop-check runs it) logs every callback slower than
    # this; without debug mode the attribute is unused.
    loop.slow_callback_duration = 0.05
    asyncio.set_event_loop(loop)
    twisted = needs_twisted(only)
    if twisted:
        install_reactor(loop)

    from mssmail import logs
    from mssmail.store.service import Store

    store = Store.from_config(config)
    store.migrate()
    ctx = ServerContext(config=config, store=store, loop=loop)
    plugin_lines = install_plugins(store, config)
    result: dict[str, Any] = {"code": 0}

    def flush_out(line: str) -> None:
        out(line)
        sys.stdout.flush()

    async def main() -> None:
        try:
            result["code"] = await run_components(ctx, only, flush_out)
        except StartupError as exc:
            # One sentence, never a traceback (the log line carries the service name).
            logs.event(logs.SERVE_ERROR, level=logging.ERROR, service=exc.service, reason=str(exc))
            print(f"mss: {exc}", file=sys.stderr)
            result["code"] = 1
        except Exception as exc:
            logs.event(logs.SERVE_ERROR, level=logging.ERROR, reason=startup_sentence(exc))
            print(f"mss: {startup_sentence(exc)}", file=sys.stderr)
            result["code"] = 1

    for line in plugin_lines:
        flush_out(line)

    if twisted:
        from twisted.internet import defer, reactor

        async def main_then_stop() -> None:
            try:
                await main()
            finally:
                reactor.stop()  # type: ignore[attr-defined]

        def begin() -> None:
            defer.Deferred.fromFuture(asyncio.ensure_future(main_then_stop()))

        reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
        reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    else:
        loop.run_until_complete(main())
    store.close()
    return result["code"]
