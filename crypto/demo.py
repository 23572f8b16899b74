"""`mss init --demo`: signature and encryption certificates for the demo doctors."""

from __future__ import annotations

from typing import Any

from crypto.context import keystore_for
from crypto.publication import publish


def create_demo(store: Any, config: Any) -> list[str]:
    from mssmail.demo import DEMO_MAILBOXES

    ks = keystore_for(config)
    lines = ["demo certificates (development CA):"]
    for local, kind, owner, name in DEMO_MAILBOXES:
        if kind != "personal":
            continue
        address = f"{local}@{config.server.domain}"
        for usage in ("signature", "encryption"):
            entry = ks.issue(address, usage, rpps=owner, display_name=name.split(" (")[0])
            cred = ks.get(address, usage)
            if cred is not None:
                publish(store, address, usage, cred.certificate)
            lines.append(f"  {address:<40} {usage:<11} serial {entry['serial'][:16]}")
    ks.write_crl()
    return lines
