"""What one peer may cost before it has proved anything: connections, descriptors, buffered bytes.

Every listener of a process (SMTP MX and submission, IMAP and IMAPS, LDAP and LDAPS, later the
web) asks one `ProcessLimits` before it serves a connection, and tells it when the connection
ends. Three counters are checked, each for its own reason:

- per source address and listener (`[limits] max_connections_per_ip`): one host cannot hold
  a whole port;
- per listener (`max_connections_per_listener`): many hosts flooding one port still leave
  room for the other ports (a flood of idle LDAP connections once made MX delivery and the
  IMAPS handshake time out, the process having no descriptor left);
- for the process (`max_connections`, never more than the open-file limit minus
  `fd_reserve`): the descriptors the store, its blobs, the logs and the SMTP workers' sockets
  need are never taken by peers, so `accept()` never meets EMFILE.

`BufferBudget` bounds the bytes that all connections together hold as unfinished input
(IMAP command lines and literals, LDAP messages): a connection whose buffer would cross the
budget is closed, instead of the process growing until the kernel kills it.

The module is sans-IO (counters only; each listener closes what is refused in its own way),
so the webmail can use it too. Nothing here is thread-safe: the listeners run on one event
loop, and SMTP worker processes ask the serve process over their gateway.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from collections import Counter
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mss.limits")

# Why a connection was refused, as listeners word it to the peer and in the log.
TOO_MANY_FROM_IP = "too many connections from your address"
TOO_MANY_ON_PORT = "too many connections on this port"
TOO_MANY_IN_TOTAL = "too many connections to this server"


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (an unprivileged process may); returns
    (soft, hard) afterwards. Why: the default soft limit (often 1024) is what a flood exhausts
    first; the connection limits below are then set from the real ceiling. SMTP worker
    processes inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a container may forbid it: keep the soft limit
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def source_key(ip: str) -> str:
    """The address a per-IP limit counts: IPv4-mapped IPv6 as IPv4, so one host has one key."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@dataclass(frozen=True)
class ConnectionLimits:
    """The connection settings of a process, once checked against its open-file limit."""

    total: int
    per_listener: int
    per_ip: int

    @classmethod
    def from_config(cls, config: Any, open_files: int | None = None) -> ConnectionLimits:
        limits = config.limits
        if open_files is None:
            open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if open_files == resource.RLIM_INFINITY:
                open_files = 1 << 20
        room = max(open_files - limits.fd_reserve, 1)
        total = min(limits.max_connections, room)
        per_listener = min(limits.max_connections_per_listener, total)
        return cls(total=total, per_listener=per_listener, per_ip=limits.max_connections_per_ip)


class ProcessLimits:
    """The connection counters of one process, shared by all its listeners."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.total = 0
        self.per_listener: Counter[str] = Counter()
        self.per_source: Counter[tuple[str, str]] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()  # (listener, reason): for the operator

    def admit(self, listener: str, ip: str, per_ip: int | None = None) -> str | None:
        """Count a new connection, or say why not (the reason, worded for the peer)."""
        key = (listener, source_key(ip))
        reason = None
        if self.per_source[key] >= (per_ip or self.limits.per_ip):
            reason = TOO_MANY_FROM_IP
        elif self.per_listener[listener] >= self.limits.per_listener:
            reason = TOO_MANY_ON_PORT
        elif self.total >= self.limits.total:
            reason = TOO_MANY_IN_TOTAL
        if reason is not None:
            if not self.refused[(listener, reason)]:  # one log line per kind, not one per connection
                log.warning("%s: refusing connections from %s and others: %s", listener, ip, reason)
            self.refused[(listener, reason)] += 1
            return reason
        self.per_source[key] += 1
        self.per_listener[listener] += 1
        self.total += 1
        return None

    def release(self, listener: str, ip: str) -> None:
        key = (listener, source_key(ip))
        if self.per_source[key] <= 0:
            return  # never admitted (or released twice): counts must not go negative
        self.per_source[key] -= 1
        if not self.per_source[key]:
            del self.per_source[key]
        self.per_listener[listener] -= 1
        self.total -= 1

    def listener(self, name: str, per_ip: int | None = None) -> ListenerGate:
        return ListenerGate(self, name, per_ip)


class ListenerGate:
    """One listener's view of the process counters: `admit(ip)` -> bool, `release(ip)`."""

    def __init__(self, limits: ProcessLimits, name: str, per_ip: int | None = None) -> None:
        self.limits, self.name, self.per_ip = limits, name, per_ip
        self.last_refusal: str | None = None

    def admit(self, ip: str) -> bool:
        self.last_refusal = self.limits.admit(self.name, ip, self.per_ip)
        return self.last_refusal is None

    def refusal(self, ip: str) -> str | None:
        """Admit, returning None, or the reason for refusing."""
        return self.limits.admit(self.name, ip, self.per_ip)

    def release(self, ip: str) -> None:
        self.limits.release(self.name, ip)


class BufferBudget:
    """Bytes held as unfinished input by all connections together, and a ceiling on them.

    A holder (any hashable: the connection object) reports how much it holds after each read;
    `hold` says False when that growth would cross the budget, and the holder's share is then
    left as it was, for the caller to close the connection. Shrinking is always allowed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.held: dict[int, int] = {}
        self.refusals = 0

    def hold(self, holder: object, size: int) -> bool:
        key = id(holder)
        before = self.held.get(key, 0)
        if size > before and self.used - before + size > self.limit:
            self.refusals += 1
            if self.refusals == 1 or self.refusals % 1000 == 0:
                log.warning("input budget of %d bytes reached (%d refusals so far): closing the "
                            "connections that would grow past it", self.limit, self.refusals)
            return False
        self.used += size - before
        if size:
            self.held[key] = size
        else:
            self.held.pop(key, None)
        return True

    def drop(self, holder: object) -> None:
        self.used -= self.held.pop(id(holder), 0)


class Limits:
    """What a process's listeners share: connection counters and the input budget."""

    def __init__(self, config: Any, open_files: int | None = None) -> None:
        self.connections = ProcessLimits(ConnectionLimits.from_config(config, open_files))
        self.input = BufferBudget(config.limits.input_budget)

    def listener(self, name: str, per_ip: int | None = None) -> ListenerGate:
        return self.connections.listener(name, per_ip)


def of(ctx: Any) -> Limits:
    """The Limits of the process serving `ctx` (a ServerContext), made on first use."""
    limits = getattr(ctx, "limits", None)
    if limits is None:
        limits = Limits(ctx.config)
        ctx.limits = limits
    return limits
