"""The `mss` command: argument parsing and output only; the work is done by the store,
the service runner and the components' own APIs.

One module per command group; each registers its commands on the root group `main`
(defined in `cli.common`) when imported here. A new group is a new module plus one
import line below.
"""

from __future__ import annotations

from cli import audit, cert, check, connector, directory, index, mailbox, queue, serve
from cli.common import main

__all__ = ["audit", "cert", "check", "connector", "directory", "index", "mailbox", "main", "queue", "serve"]
