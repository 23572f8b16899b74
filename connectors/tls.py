"""The TLS client context of the targets that speak to a receiver's server (fhir, mllp).

One place for what both promise in their rules' options: the server's certificate and
host name checked (RFC 6125 section 6) against the system's CAs or `ca_file`, TLS 1.2 at
least, and a client certificate (`cert_file`, `key_file`) for a receiver that requires
mutual TLS.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping


def client_context(options: Mapping[str, str]) -> ssl.SSLContext:
    """A verifying client context from a rule's `ca_file`, `cert_file` and `key_file`."""
    context = ssl.create_default_context(cafile=options.get("ca_file") or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.get("cert_file"):
        context.load_cert_chain(options["cert_file"], options.get("key_file") or None)
    return context
