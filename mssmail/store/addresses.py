"""Mail address syntax as the store accepts it (RFC 5321 4.1.2, RFC 6531 for UTF-8)."""

from __future__ import annotations

import re

from mssmail.store.errors import InvalidAddress

_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\]\\]{1,64}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([^\s@.\"(),:;<>\[\]\\]{1,63})(\.[^\s@.\"(),:;<>\[\]\\]{1,63})*$")


def normalize(address: str) -> str:
    """Lower-cased address, or InvalidAddress with the reason."""
    address = (address or "").strip()
    if address.count("@") != 1:
        raise InvalidAddress(f"{address!r} is not a mail address (expected local-part@domain).")
    local, domain = address.rsplit("@", 1)
    if not _LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAddress(f"{address!r} has an invalid local part.")
    if not _DOMAIN.match(domain):
        raise InvalidAddress(f"{address!r} has an invalid domain.")
    return f"{local}@{domain}".lower()


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower()
