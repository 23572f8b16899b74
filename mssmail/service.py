"""`mss serve`: every listener in one process, on one asyncio loop shared with Twisted.

Twisted's asyncio reactor is installed before anything imports the reactor, so the
Twisted-based IMAP and LDAP servers and the asyncio-based SMTP servers and web app run
on the same loop (DESIGN rule 5). Each capability is a *component*: an object with
`async start() -> list[str]` (one line per listener, printed) and
`async stop(grace: float)` (stop accepting, let work in flight finish within `grace`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    "web": "webmail.app:web_component",
    "connectors": "connectors.worker:connectors_component",
}


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
            component = factory(ctx)
            if component is None:
                continue
            for line in await component.start():
                out(line)
            started.append(component)
            ctx.components[name] = component
        out(f"mss ready: {len(started)} service(s) running; SIGTERM stops")
        await stop_requested.wait()
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
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    install_reactor(loop)
    from twisted.internet import defer, reactor

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
        except Exception as exc:
            log.exception("mss serve failed")
            print(f"mss serve: {exc}", file=sys.stderr)
            result["code"] = 1
        finally:
            reactor.stop()  # type: ignore[attr-defined]

    for line in plugin_lines:
        flush_out(line)

    def begin() -> None:
        defer.Deferred.fromFuture(asyncio.ensure_future(main()))

    reactor.callWhenRunning(begin)  # type: ignore[attr-defined]
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    store.close()
    return result["code"]
