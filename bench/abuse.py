"""Floods against a real `mss serve` on loopback, and what the other listeners' latency did.

    python bench/abuse.py [--hosts 60] [--samples 30] [--json FILE]

Starts one instance (`mss init --demo` in a temporary directory, default limits), measures
the listeners at rest, then runs each flood in turn and measures again while it lasts:

- idle: idle TCP connections on one port (SMTP, IMAP, IMAPS, LDAP), from `--hosts` loopback
  addresses (127.0.x.y: each one a "host"), each host up to the per-IP limit and a few more;
- imap-literal: 20 connections, each an unfinished `{62000000+}` literal before login;
- ldap-ber: 30 anonymous connections, each the start of a 15 MB LDAP message;
- rcpt-harvest: one SMTP session sending 2,000 RCPT TO unknown addresses;
- noop: one SMTP session sending NOOPs (20,000 at most, 10 s at most).

The probes, each in turn during a flood: MX delivery over STARTTLS (one message per sample on
a fresh session; p50/p99 of the whole transaction), IMAPS login (connect, TLS, LOGIN, LOGOUT),
LDAP root DSE search. The targets of issue 12: MX delivery p99 under 200 ms and IMAPS login
still served while one port is flooded. It also prints what the flood achieved (connections
admitted/refused, answers before the server hung up) and the server's resident memory.

Bounded: each flood lasts as long as its probes (a few seconds), every socket has a
timeout, the instance is stopped at the end. Runs under `flock /tmp/mss-bench.lock` (taken
here) so that two benchmarks never overlap.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import imaplib
import json
import smtplib
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.security import wire
from tests.support.instance import MssInstance

PER_IP = 20  # [limits] max_connections_per_ip, the default
# The probe that talks to the flooded port: it is expected to fail once the flood holds the
# port's whole share ([limits] max_connections_per_listener); the targets are about the others.
FLOODED_PROBE = {"ldap": "ldap", "smtp": "mx", "imap": None, "imaps": "imaps"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Probes:
    def __init__(self, inst: MssInstance) -> None:
        self.inst = inst
        self.tls = ssl.create_default_context(cafile=str(inst.ca_file))
        self.sent = 0

    def mx(self) -> float:
        self.sent += 1
        raw = (f"From: dr.x@b.example\r\nTo: claire.durand@a.example\r\nSubject: abuse {self.sent}\r\n"
               f"Message-ID: <abuse-{self.sent}-{time.time_ns()}@b.example>\r\n\r\nBonjour.\r\n").encode()
        start = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", self.inst.ports["smtp"], timeout=10) as client:
            client.starttls(context=self.tls)
            client.ehlo("mx.b.example")
            client.sendmail("dr.x@b.example", ["claire.durand@a.example"], raw)
        return time.perf_counter() - start

    def imaps(self) -> float:
        address = self.inst.address("claire.durand")
        start = time.perf_counter()
        client = imaplib.IMAP4_SSL("127.0.0.1", self.inst.ports["imaps"], ssl_context=self.tls, timeout=10)
        client.login(address, self.inst.passwords[address])
        client.logout()
        return time.perf_counter() - start

    def ldap(self) -> float:
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", self.inst.ports["ldap"]), timeout=10) as s:
            s.sendall(wire.search(1))
            got, _ = wire.responses(s, until_id=1, timeout=10)
            if not any(m[0] == 1 and m[2] == 0 for m in got):
                raise OSError("no answer")
        return time.perf_counter() - start

    def measure(self, samples: int) -> dict[str, dict[str, float | int]]:
        out: dict[str, dict[str, float | int]] = {}
        for name, probe, count in (("mx", self.mx, samples), ("imaps", self.imaps, max(3, samples // 6)),
                                   ("ldap", self.ldap, samples)):
            times, failures = [], 0
            for _ in range(count):
                try:
                    times.append(probe())
                except (OSError, smtplib.SMTPException, imaplib.IMAP4.error, ssl.SSLError):
                    failures += 1
            times.sort()
            out[name] = {
                "ok": len(times), "failed": failures,
                "p50_ms": round(statistics.median(times) * 1000, 1) if times else -1,
                "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 1) if times else -1,
            }
        return out


# --- floods: context managers that hold the flood while the probes run ---------------------

def hosts(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"127.0.{10 + i // 250}.{1 + i % 250}"


@contextlib.contextmanager
def idle_flood(inst: MssInstance, port: str, n_hosts: int, result: dict) -> Iterator[None]:
    socks = []
    try:
        for host in hosts(n_hosts):
            for _ in range(PER_IP + 2):
                try:
                    socks.append(wire.connect_from(host, inst.ports[port]))
                except OSError:
                    result["connect_failed"] = result.get("connect_failed", 0) + 1
        closed = wire.closed_by_server(socks, len(socks), timeout=3)
        result.update(opened=len(socks), closed_by_server=len(closed), held=len(socks) - len(closed))
        yield
    finally:
        for s in socks:
            s.close()


def _read_line(s: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while b"\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


@contextlib.contextmanager
def imap_literal_flood(inst: MssInstance, result: dict) -> Iterator[None]:
    before = rss_mb(inst.process.pid)
    socks = []
    try:
        for host in hosts(20):
            s = wire.connect_from(host, inst.ports["imap"])
            s.settimeout(5)
            _read_line(s)
            with contextlib.suppress(OSError):
                s.sendall(b"a1 LOGIN {62000000+}\r\n" + b"x" * 1_000_000)
            socks.append(s)
        answers = [_read_line(s) for s in socks]
        result.update(connections=len(socks), told_bye=sum(a.startswith(b"* BYE") for a in answers),
                      rss_before_mb=round(before, 1), rss_during_mb=round(rss_mb(inst.process.pid), 1))
        yield
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def ldap_ber_flood(inst: MssInstance, result: dict) -> Iterator[None]:
    before = rss_mb(inst.process.pid)
    socks = []
    try:
        for host in hosts(30):
            s = wire.connect_from(host, inst.ports["ldap"])
            s.settimeout(5)
            with contextlib.suppress(OSError):
                s.sendall(b"\x30\x84" + (15 * 1024 * 1024).to_bytes(4, "big") + b"\x02\x01\x01" + b"\x00" * 1_000_000)
            socks.append(s)
        closed = wire.closed_by_server(socks, len(socks), timeout=5)
        result.update(connections=len(socks), closed_by_server=len(closed),
                      rss_before_mb=round(before, 1), rss_during_mb=round(rss_mb(inst.process.pid), 1))
        yield
    finally:
        for s in socks:
            s.close()


def smtp_dialogue_abuse(inst: MssInstance, command: Callable[[int], bytes], count: int, seconds: float) -> dict:
    """Send `count` commands, pipelined in batches, for at most `seconds`; how many were answered
    before the server closed the session."""
    s = socket.create_connection(("127.0.0.1", inst.ports["smtp"]), timeout=5)
    answered, sent, closed = 0, 0, False
    deadline = time.monotonic() + seconds
    try:
        _read_line(s)
        s.sendall(b"EHLO abuse.b.example\r\nMAIL FROM:<x@b.example>\r\n")
        buf = b""
        while sent < count and time.monotonic() < deadline and not closed:
            batch = min(100, count - sent)
            try:
                s.sendall(b"".join(command(sent + i) for i in range(batch)))
            except OSError:
                closed = True
                break
            sent += batch
            while answered < sent and time.monotonic() < deadline:
                s.settimeout(1)
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                buf += chunk
                # final reply lines, less those of EHLO and MAIL (the greeting was read above)
                answered = sum(1 for line in buf.split(b"\r\n") if line[:3].isdigit() and line[3:4] == b" ") - 2
    finally:
        s.close()
    return {"sent": sent, "answered": max(answered, 0), "server_closed": closed}


def run(args: argparse.Namespace) -> dict:
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mss-abuse-") as tmp:
        inst = MssInstance(Path(tmp) / "a.example", "a.example")
        inst.configure("trust", "domains", '["b.example"]')
        inst.start("smtp", "imap", "ldap")
        try:
            probes = Probes(inst)
            probes.measure(3)  # warm-up
            rows["at rest"] = {"probes": probes.measure(args.samples), "rss_mb": round(rss_mb(inst.process.pid), 1)}
            for port in ("ldap", "smtp", "imap", "imaps"):
                result: dict = {}
                with idle_flood(inst, port, args.hosts, result):
                    rows[f"idle flood on {port}"] = {"flood": result, "probes": probes.measure(args.samples),
                                                     "flooded_probe": FLOODED_PROBE[port]}
            for name, flood in (("imap literal before login", imap_literal_flood),
                                ("ldap 15 MB BER, anonymous", ldap_ber_flood)):
                result = {}
                with flood(inst, result):
                    rows[name] = {"flood": result, "probes": probes.measure(args.samples)}
            rows["rcpt harvesting"] = {"flood": smtp_dialogue_abuse(
                inst, lambda i: f"RCPT TO:<nobody{i}@a.example>\r\n".encode(), 2000, 20)}
            rows["noop abuse"] = {"flood": smtp_dialogue_abuse(inst, lambda i: b"NOOP\r\n", 20000, 10)}
            rows["after"] = {"probes": probes.measure(args.samples), "rss_mb": round(rss_mb(inst.process.pid), 1)}
        finally:
            inst.stop()
    return rows


def report(rows: dict) -> None:
    print(f"{'flood':<28} {'MX p50/p99 ms':>16} {'IMAPS ok p50':>14} {'LDAP p50 ms':>12}  flood result")
    for name, row in rows.items():
        p = row.get("probes")
        if p:
            mx = f"{p['mx']['p50_ms']}/{p['mx']['p99_ms']}" + (f" ({p['mx']['failed']} failed)" if p["mx"]["failed"] else "")
            imaps = f"{p['imaps']['ok']}/{p['imaps']['ok'] + p['imaps']['failed']} {p['imaps']['p50_ms']}"
            ldap = f"{p['ldap']['p50_ms']}" + (f" ({p['ldap']['failed']} failed)" if p["ldap"]["failed"] else "")
        else:
            mx = imaps = ldap = "-"
        extra = {**row.get("flood", {}), **({"rss_mb": row["rss_mb"]} if "rss_mb" in row else {})}
        print(f"{name:<28} {mx:>16} {imaps:>14} {ldap:>12}  {json.dumps(extra)}")
    worst, imaps_ok, mx_ok = -1.0, True, True
    for row in rows.values():
        p, flooded = row.get("probes"), row.get("flooded_probe")
        if not p:
            continue
        if flooded != "mx":
            mx_ok = mx_ok and p["mx"]["failed"] == 0
            worst = max(worst, p["mx"]["p99_ms"])
        if flooded != "imaps":
            imaps_ok = imaps_ok and p["imaps"]["ok"] > 0 and p["imaps"]["failed"] == 0
    met = mx_ok and 0 <= worst < 200
    print(f"\ntarget MX delivery p99 < 200 ms while another port is flooded: {'met' if met else 'NOT met'} "
          f"(worst {worst} ms{'' if mx_ok else ', some deliveries failed'}); IMAPS login served while "
          f"another port is flooded: {'yes' if imaps_ok else 'NO'}. A port flooded by many hosts is full "
          "for newcomers until the flood ends or its peers time out (its probe above).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=60, help="loopback source addresses per idle flood")
    parser.add_argument("--samples", type=int, default=30, help="MX and LDAP probes per phase")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with open("/tmp/mss-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = run(args)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
