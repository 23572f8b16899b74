"""Where mail for a remote domain goes: static `[relay] routes`, else MX (optional)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mssmail.config import RelayConfig

SMTP_PORT = 25


class NoRoute(Exception):
    """No way to reach a domain: a permanent failure (RFC 3463 5.4.4, unable to route)."""


class RouteLookupFailed(Exception):
    """A transient lookup problem (DNS timeout): a temporary failure (4.4.3)."""


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def parse_route(text: str) -> tuple[str, str, int]:
    """'b.example=127.0.0.1:2625' -> ('b.example', '127.0.0.1', 2625)."""
    domain, sep, target = text.strip().partition("=")
    host, sep2, port_text = target.rpartition(":")
    if not sep or not sep2 or not domain or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"expected a route like 'b.example=127.0.0.1:2625', got {text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in route {text!r}")
    return domain.lower(), host, port


def resolve(domain: str, relay: RelayConfig) -> list[tuple[str, int]]:
    """Hosts to try for `domain`, in order."""
    domain = domain.lower()
    table = relay.route_table()
    if domain in table:
        return [table[domain]]
    if not relay.use_mx:
        raise NoRoute(f"no route to domain {domain} ([relay] routes has none and use_mx is off)")
    return _mx_hosts(domain)


def _mx_hosts(domain: str) -> list[tuple[str, int]]:
    try:
        import dns.exception
        import dns.resolver
    except ModuleNotFoundError:
        raise NoRoute(f"no route to domain {domain}: [relay] use_mx needs dnspython, "
                      "which is not installed") from None
    try:
        answer = dns.resolver.resolve(domain, "MX")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        # RFC 5321 5.1: no MX -> the domain itself is the implicit MX.
        return [(domain, SMTP_PORT)]
    except dns.exception.DNSException as exc:
        raise RouteLookupFailed(f"MX lookup for {domain} failed: {exc}") from exc
    records = sorted(answer, key=lambda r: r.preference)
    hosts = [(str(r.exchange).rstrip("."), SMTP_PORT) for r in records]
    # RFC 7505: a null MX ("." ) means the domain accepts no mail.
    if hosts == [("", SMTP_PORT)]:
        raise NoRoute(f"domain {domain} accepts no mail (null MX)")
    return [h for h in hosts if h[0]]
