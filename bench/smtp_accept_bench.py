#!/usr/bin/env python3
"""SMTP acceptance with durable storage, side by side with a bare aiosmtpd server.

    .venv/bin/python bench/smtp_accept_bench.py [--messages 600] [--quick]

For each server (bare aiosmtpd whose handler discards, `mss serve --only smtp` on
SQLite, the same on PostgreSQL), each transport (plain, STARTTLS) and each concurrency
(1, 8, 32 connections), an asyncio client sends 10 KB messages with a base64
attachment over persistent connections and measures messages/s and the latency of
each transaction (MAIL to the reply after DATA). The server's peak RSS is VmHWM.
Not a test: run by hand, results go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.instance import MssInstance, free_port  # noqa: E402

PG_URL = os.environ.get("MSS_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")

BARE_SERVER = r'''
import asyncio, ssl, sys
from aiosmtpd.smtp import SMTP
class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
async def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Discard(), decode_data=False, enable_SMTPUTF8=True, tls_context=ctx,
                     data_size_limit=50 * 1024 * 1024), "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
'''


def make_message(n: int) -> bytes:
    attachment = base64.encodebytes(os.urandom(7000)).replace(b"\n", b"\r\n")
    return (
        f"From: jean.martin@a.example\r\nTo: claire.durand@a.example\r\nSubject: bench {n}\r\n"
        f"Message-ID: <bench-{n}-{uuid.uuid4().hex}@a.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        "Compte rendu joint.\r\n--b\r\nContent-Type: application/pdf; name=\"cr.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"cr.pdf\"\r\n\r\n"
    ).encode() + attachment + b"--b--\r\n"


class Client:
    """A minimal SMTP client: one connection, sequential transactions."""

    def __init__(self, port: int, tls: ssl.SSLContext | None) -> None:
        self.port = port
        self.tls = tls

    async def _reply(self) -> bytes:
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if line[3:4] != b"-":
                return line

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        await self._reply()
        self.writer.write(b"EHLO bench.a.example\r\n")
        await self._reply()
        if self.tls:
            self.writer.write(b"STARTTLS\r\n")
            await self._reply()
            await self.writer.start_tls(self.tls, server_hostname="localhost")
            self.writer.write(b"EHLO bench.a.example\r\n")
            await self._reply()

    async def send(self, data: bytes) -> float:
        started = time.perf_counter()
        self.writer.write(b"MAIL FROM:<jean.martin@a.example>\r\n")
        assert (await self._reply()).startswith(b"250")
        self.writer.write(b"RCPT TO:<claire.durand@a.example>\r\n")
        assert (await self._reply()).startswith(b"250")
        self.writer.write(b"DATA\r\n")
        assert (await self._reply()).startswith(b"354")
        self.writer.write(data + b".\r\n")
        reply = await self._reply()
        assert reply.startswith(b"250"), reply
        return time.perf_counter() - started


async def load(port: int, tls: ssl.SSLContext | None, concurrency: int, total: int,
               messages: list[bytes]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        client = Client(port, tls)
        await client.connect()
        for n in counter:
            latencies.append(await client.send(messages[n % len(messages)]))
        client.writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class BareServer:
    def __init__(self, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(self.port), str(cert), str(key)],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout and self.process.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)


def pg_schema() -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{PG_URL}?options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=600, help="messages per run (c=1 runs a third)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--servers", default="bare,sqlite,postgresql")
    parser.add_argument("--transports", default="plain,starttls")
    parser.add_argument("--profile", metavar="DIR",
                        help="record each mss run with py-spy (pip install py-spy) into DIR/*.txt (collapsed stacks)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smtp-bench-"))
    messages = [make_message(n) for n in range(50)]
    rows = []
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"message {len(messages[0])} bytes")
    for server_kind in args.servers.split(","):
        schema = None
        if server_kind == "bare":
            inst = None
            bare_ca = MssInstance(work / "ca", "a.example", demo=False)
            server = BareServer(bare_ca.data / "pki" / "server.pem", bare_ca.data / "pki" / "server.key")
            port, pid, ca = server.port, server.pid, bare_ca.ca_file
        else:
            url = None
            if server_kind == "postgresql":
                schema, url = pg_schema()
            inst = MssInstance(work / server_kind, "a.example", database_url=url)
            inst.configure("limits", "max_connections_per_ip", "100")
            inst.start("smtp")
            assert inst.process is not None
            port, pid, ca = inst.ports["smtp"], inst.process.pid, inst.ca_file
        tls_ctx = ssl.create_default_context(cafile=str(ca))
        for transport in args.transports.split(","):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                total = args.messages if concurrency > 1 else max(100, args.messages // 3)
                spy = None
                if args.profile and inst is not None:
                    Path(args.profile).mkdir(parents=True, exist_ok=True)
                    svg = Path(args.profile) / f"{server_kind}-{transport}-c{concurrency}.txt"
                    spy = subprocess.Popen(["py-spy", "record", "--threads", "--format", "raw", "--pid", str(pid), "-o", str(svg)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                elapsed, lat = asyncio.run(load(port, tls_ctx if transport == "starttls" else None,
                                                concurrency, total, messages))
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                lat.sort()
                row = {
                    "server": "aiosmtpd (discard)" if server_kind == "bare" else f"mss ({server_kind})",
                    "transport": transport, "c": concurrency, "msgs": total,
                    "rate": total / elapsed,
                    "p50": statistics.median(lat) * 1000,
                    "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
                    "rss": peak_rss_mb(pid),
                }
                rows.append(row)
                print(f"{row['server']:<20} {transport:<8} c={concurrency:<3} {row['rate']:8.1f} msg/s  "
                      f"p50 {row['p50']:6.1f} ms  p99 {row['p99']:6.1f} ms  peak RSS {row['rss']:.0f} MB",
                      flush=True)
        if inst is not None:
            inst.stop()
        else:
            server.stop()
        if schema:
            drop_schema(schema)
    print()
    print("| server | transport | concurrency | messages/s | p50 ms | p99 ms | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['transport']} | {r['c']} | {r['rate']:.0f} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['rss']:.0f} |")
    bare = {(r["transport"], r["c"]): r["rate"] for r in rows if r["server"].startswith("aiosmtpd")}
    for r in rows:
        if r["server"] == "mss (sqlite)" and (r["transport"], r["c"]) in bare:
            print(f"mss sqlite / bare, {r['transport']} c={r['c']}: {r['rate'] / bare[(r['transport'], r['c'])]:.0%}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
