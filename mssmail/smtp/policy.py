"""Who may send what to whom (pure functions: no I/O, no store)."""

from __future__ import annotations

import enum
from collections.abc import Collection
from email.utils import getaddresses

from mssmail.smtp import replies


class Route(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"  # another operator of the space of trust
    REFUSED = "refused"


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower() if "@" in address else ""


def classify_recipient(address: str, local_domains: Collection[str], trust_domains: Collection[str]) -> Route:
    domain = domain_of(address)
    if domain in local_domains:
        return Route.LOCAL
    if domain in trust_domains:
        return Route.REMOTE
    return Route.REFUSED


def mx_sender_allowed(sender: str, trust_domains: Collection[str]) -> replies.Reply | None:
    """MX: mail only from the space of trust (None = allowed). The null sender of DSNs
    (RFC 5321 4.5.5) is allowed: bounces must come back."""
    if sender == "":
        return None
    if domain_of(sender) in trust_domains:
        return None
    return replies.SENDER_NOT_TRUSTED


def submission_sender_allowed(sender: str, allowed: Collection[str]) -> replies.Reply | None:
    """Submission: an authenticated user sends as itself or a mailbox delegated to it."""
    return None if sender.lower() in {a.lower() for a in allowed} else replies.SENDER_NOT_OWNED


def from_header_addresses(raw_header_values: list[str]) -> list[str]:
    return [addr.lower() for _name, addr in getaddresses(raw_header_values) if addr]
