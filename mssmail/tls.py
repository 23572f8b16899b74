"""TLS contexts for listeners and for relaying between operators (mutual TLS)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mssmail.config import Config


def _load_anchors(context: ssl.SSLContext, config: Config) -> int:
    loaded = 0
    for name in config.trust.ca_files:
        path = config.path(name)
        if Path(path).exists():
            context.load_verify_locations(cafile=str(path))
            loaded += 1
    return loaded


def server_context(config: Config, *, request_client_cert: bool = False) -> ssl.SSLContext:
    """Listener context; asks for (and checks) a client certificate when told to.

    With `request_client_cert` the handshake accepts clients without one (CERT_OPTIONAL)
    so that the SMTP layer can refuse them with a proper reply instead of a TLS alert.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.path(config.server.tls_cert)), str(config.path(config.server.tls_key)))
    if request_client_cert and _load_anchors(context, config):
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(config: Config) -> ssl.SSLContext:
    """Relay context: verify the peer against [trust] ca_files, present our certificate."""
    # Only the space of trust's anchors, not the system store.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    _load_anchors(context, config)
    context.load_cert_chain(str(config.path(config.server.tls_cert)), str(config.path(config.server.tls_key)))
    return context
