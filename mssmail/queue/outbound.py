"""Queueing a message for relay to another operator of the space of trust.

`enqueue` is what SMTP submission calls before it answers 250: the message is durable
(blob fsynced, row and audit event committed) when it returns, and the relay worker of
this process is woken at once.
"""

from __future__ import annotations

from typing import Any

from mssmail.queue import notify


def enqueue(store: Any, sender: str, recipients: list[str], raw: bytes, envelope_id: str = "",
            *, actor: str = "", ip: str = "") -> int:
    """Queue `raw` from `sender` (may be "" for the null sender) to remote `recipients`."""
    item_id = store.enqueue_outbound(sender, recipients, raw, envelope_id, actor=actor, ip=ip)
    notify.wake()
    return item_id
