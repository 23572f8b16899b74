"""Support for the relay tests (no tests here): test PKIs, a recording TLS SMTP peer (aiosmtpd)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from crypto import pki
from mssmail.config import Config, load_config
from tests.support.instance import free_port


def make_pki(directory: Path, organisation: str, hostname: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pki.create_ca(directory, organisation)
    pki.issue_server_certificate(directory, hostname)
    return directory


def peer_tls_context(pki_dir: Path, client_ca: Path) -> ssl.SSLContext:
    """The remote operator's listener: its certificate, and it asks for ours."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki_dir / pki.SERVER_CERT), str(pki_dir / pki.SERVER_KEY))
    context.load_verify_locations(cafile=str(client_ca))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@dataclass
class Recorder:
    """aiosmtpd handler recording what the relay did, with per-address replies."""

    replies: dict[str, str] = field(default_factory=dict)
    mail_from: list[tuple[str, bool]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_from.append((address, session.ssl is not None))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.replies.get(address, "250 OK")
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        peercert = session.ssl.get("peercert") if session.ssl else None
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "content": envelope.original_content, "tls": session.ssl is not None,
                              "client_cert": peercert})
        return "250 2.0.0 queued as 1"


def start_peer(handler: Recorder, port: int, tls: ssl.SSLContext | None) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=tls,
                            require_starttls=tls is not None)
    controller.start()
    return controller


def relay_config(data: Path, port: int, trust_ca: Path, **relay: str) -> Config:
    env = {
        "MSS_SERVER_DOMAIN": "a.example",
        "MSS_TRUST_CA_FILES": str(trust_ca),
        "MSS_TRUST_DOMAINS": "b.example",
        "MSS_RELAY_ROUTES": f"b.example=127.0.0.1:{port}",
        "MSS_RELAY_POLL_INTERVAL": "1",
        "MSS_RELAY_RETRY_INITIAL": "1",
        "MSS_RELAY_CONNECT_TIMEOUT": "5",
    }
    env.update({f"MSS_RELAY_{k.upper()}": v for k, v in relay.items()})
    return load_config(data, environ=env)


async def run_worker(config: Config, store: Any, until: Callable[[], bool], timeout: float,
                     during: Callable[[], None] | None = None) -> bool:
    """Run a relay worker until `until()` holds (checked off the loop) or `timeout`."""
    from mssmail.queue.worker import RelayWorker

    worker = RelayWorker(config, store)
    await worker.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if during is not None:
                during()
            if await store.run(until):
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await worker.stop(5)


__all__ = [
    "Recorder",
    "free_port",
    "make_pki",
    "peer_tls_context",
    "relay_config",
    "run_worker",
    "start_peer",
]
