"""`mss init --demo`: a structure, two doctors, a lab and a DUI application mailbox.

The passwords are random, printed once and kept in DATA/demo-passwords.txt (mode 0600)
so the README tour can use them.
"""

from __future__ import annotations

import importlib
import secrets
from typing import Any

from crypto.pki import write_private

# (local part, type, owner identifier, display name)
DEMO_MAILBOXES = [
    ("jean.martin", "personal", "10003456786", "Dr Jean Martin (médecin généraliste)"),
    ("claire.durand", "personal", "10005678908", "Dr Claire Durand (cardiologue)"),
    ("laboratoire", "organisational", "750000012", "Laboratoire Biologie Demo"),
    ("dui", "applicative", "750000012", "DUI Demo (logiciel)"),
]


def create_demo(store: Any, config: Any) -> list[str]:
    domain = config.server.domain
    lines = ["demo mailboxes (address / password):"]
    saved = []
    for local, kind, owner, name in DEMO_MAILBOXES:
        password = secrets.token_urlsafe(9)
        while password.startswith("-"):  # command-line tools (swaks) take it for an option
            password = secrets.token_urlsafe(9)
        address = f"{local}@{domain}"
        store.create_mailbox(address, kind, password=password, owner=owner, display_name=name,
                             actor="mss init --demo")
        lines.append(f"  {address:<40} {password}")
        saved.append(f"{address} {password}")
    store.add_delegation(f"laboratoire@{domain}", f"claire.durand@{domain}", "full", actor="mss init --demo")
    write_private(config.data_dir / "demo-passwords.txt", ("\n".join(saved) + "\n").encode())
    lines.append(f"  (also in {config.data_dir / 'demo-passwords.txt'})")
    # Other components add their demo data (directory entries, certificates...).
    for module_name in ("directory.demo", "crypto.demo", "connectors.demo"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        lines.extend(module.create_demo(store, config))
    return lines
