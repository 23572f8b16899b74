#!/usr/bin/env python3
"""SMTP acceptance with durable storage, side by side with a bare aiosmtpd server.

    .venv/bin/python bench/smtp_accept_bench.py [--messages 600] [--rounds 3] [--port smtp,submission]

The servers (bare aiosmtpd whose handler discards, `mss serve --only smtp` on SQLite,
the same on PostgreSQL; `sqlite+index` / `postgresql+index`: the full-text indexer
running too) run side by side; for each port (the MX; with `--port
submission`, the submission port too: STARTTLS, then AUTH PLAIN once per connection,
to a local recipient, the Sent copy filed as well; the bare server then accepts any
AUTH), each transport (plain, STARTTLS; submission needs STARTTLS) and each
concurrency (1, 8, 32 connections) an asyncio client loads each server in turn (with
--rounds N, N times alternately, keeping each server's median round), sending 10 KB
messages with a base64 attachment over persistent connections, and measures
messages/s and the latency of each transaction (MAIL to the reply after DATA). The
server's peak RSS is VmHWM. With `--signed`, every message is S/MIME-signed (detached)
by a CA of the bench's own that the mss servers trust, so the MX and submission check each
signature to a valid verdict, as they do for real signed mail.
Not a test: run by hand, results go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
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
from aiosmtpd.smtp import SMTP, AuthResult
class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
def anyone(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)
async def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Discard(), decode_data=False, enable_SMTPUTF8=True, tls_context=ctx,
                     data_size_limit=50 * 1024 * 1024, authenticator=anyone), "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
'''


def make_message(n: int) -> bytes:
    attachment = base64.encodebytes(os.urandom(7000)).replace(b"\n", b"\r\n")
    return (
        f"From: dr.x@b.example\r\nTo: claire.durand@a.example\r\nSubject: bench {n}\r\n"
        f"Message-ID: <bench-{n}-{uuid.uuid4().hex}@a.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        "Compte rendu joint.\r\n--b\r\nContent-Type: application/pdf; name=\"cr.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"cr.pdf\"\r\n\r\n"
    ).encode() + attachment + b"--b--\r\n"


class Client:
    """A minimal SMTP client: one connection, sequential transactions."""

    def __init__(self, port: int, tls: ssl.SSLContext | None, login: tuple[str, str] | None = None,
                 recipient: str = "claire.durand@a.example") -> None:
        self.port = port
        self.recipient = recipient.encode()
        self.tls = tls
        self.login = login  # AUTH PLAIN after STARTTLS (submission)
        # The MX takes mail from a trust-space sender; submission only as the logged-in user.
        self.sender = login[0].encode() if login else b"dr.x@b.example"

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
        if self.login:
            token = base64.b64encode(f"\0{self.login[0]}\0{self.login[1]}".encode()).decode()
            self.writer.write(f"AUTH PLAIN {token}\r\n".encode())
            reply = await self._reply()
            assert reply.startswith(b"235"), reply

    async def send(self, data: bytes) -> float:
        started = time.perf_counter()
        self.writer.write(b"MAIL FROM:<%s>\r\n" % self.sender)
        assert (await self._reply()).startswith(b"250")
        self.writer.write(b"RCPT TO:<%s>\r\n" % self.recipient)
        assert (await self._reply()).startswith(b"250")
        self.writer.write(b"DATA\r\n")
        assert (await self._reply()).startswith(b"354")
        self.writer.write(data + b".\r\n")
        reply = await self._reply()
        assert reply.startswith(b"250"), reply
        return time.perf_counter() - started


async def load(port: int, tls: ssl.SSLContext | None, concurrency: int, total: int,
               messages: list[bytes], login: tuple[str, str] | None = None,
               recipient: str = "claire.durand@a.example") -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(total))

    if login:  # submission: the From: field must be the user's own (the submission check)
        messages = [m.replace(b"From: dr.x@b.example", b"From: " + login[0].encode(), 1) for m in messages]

    async def worker() -> None:
        client = Client(port, tls, login, recipient)
        await client.connect()
        for n in counter:
            latencies.append(await client.send(messages[n % len(messages)]))
        client.writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def process_tree(pid: int) -> list[int]:
    """The server and its worker processes (mss serve with [smtp] workers)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def peak_rss_mb(pid: int) -> float:
    """Sum of VmHWM over the process tree: shared pages count once per process, so
    this overstates a multi-process server a little, never understates it."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pid: int) -> dict[int, tuple[float, float]]:
    """User and system CPU of each process of the tree so far (utime, stime of /proc/PID/stat)."""
    times = {}
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        times[member] = (int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK"))
    return times


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


CLEANED = Path(tempfile.gettempdir()) / "mss-smtp-bench.cleaned"
QUIET_AFTER_CLEANUP = 35.0


def wait_after_last_cleanup() -> None:
    """ext4 without a journal (this VM's disk) skips, when it allocates an inode, each one
    freed in the last 30 seconds, at a cost per inode skipped: a run that starts right
    after the previous run deleted its thousands of files pays for it in every file it
    creates. Wait until those deletions are old."""
    with contextlib.suppress(OSError, ValueError):
        remaining = float(CLEANED.read_text()) + QUIET_AFTER_CLEANUP - time.time()
        if remaining > 0:
            print(f"waiting {remaining:.0f} s: the previous run's files were deleted just now", flush=True)
            time.sleep(remaining)


def signing_pki(work: Path) -> Path:
    """A CA of the bench's own with a signature certificate for each sender (the MX's
    trust-space sender, the submission user): `--signed` signs every message with it and
    each mss server trusts it (DATA/pki/trust, its CRL in DATA/pki/crls), so the
    signatures are checked to a valid verdict as a real signed mail's are."""
    from crypto import pki
    from crypto.keystore import KeyStore

    pki_dir = work / "signer-pki"
    pki.create_ca(pki_dir, "bench signer")
    store = KeyStore(pki_dir)
    for address, rpps in (("dr.x@b.example", "10003456787"), ("jean.martin@a.example", "10005678905")):
        store.issue(address, "signature", rpps=rpps, display_name=address.split("@")[0])
    store.write_crl()
    return pki_dir


def sign_messages(messages: list[bytes], pki_dir: Path, sender: str) -> list[bytes]:
    """Each message with its From: set to `sender`, S/MIME-signed (detached) as `sender`."""
    from crypto import smime
    from crypto.keystore import KeyStore

    credential = KeyStore(pki_dir).get(sender, "signature")
    return [smime.sign_message(m.replace(b"From: dr.x@b.example", b"From: " + sender.encode(), 1), credential)
            for m in messages]


def start_server(kind: str, work: Path, workers: int | None, signer: Path | None = None) -> dict:
    """One server of the comparison, started and left running for the whole run."""
    if kind == "bare":
        bare_ca = MssInstance(work / "ca", "a.example", demo=False)
        server = BareServer(bare_ca.data / "pki" / "server.pem", bare_ca.data / "pki" / "server.key")
        return {"kind": kind, "name": "aiosmtpd (discard)", "ports": {"smtp": server.port, "submission": server.port},
                "pid": server.pid, "ca": bare_ca.ca_file, "stop": server.stop, "inst": None, "schema": None,
                "login": ("jean.martin@a.example", "any")}
    # "sqlite+index" / "postgresql+index": the same with the full-text indexer running
    # beside the listeners (issue 16: acceptance within 10% of its figure without it).
    engine, _, extra = kind.partition("+")
    components = ("smtp", "submission", *(("index",) if extra == "index" else ()))
    schema = url = None
    if engine == "postgresql":
        schema, url = pg_schema()
    inst = MssInstance(work / kind, "a.example", database_url=url)
    inst.configure("limits", "max_connections_per_ip", "100")
    inst.configure("trust", "domains", '["b.example"]')  # the MX takes no local sender (issue 12)
    if workers is not None:
        inst.configure("smtp", "workers", str(workers))
        inst.configure("submission", "workers", str(workers))
    if signer is not None:  # --signed: the bench's signing CA is trusted here
        for sub, name in (("trust", "ca.pem"), ("crls", "crl.pem")):
            (inst.data / "pki" / sub).mkdir(exist_ok=True)
            shutil.copy(signer / name, inst.data / "pki" / sub / f"bench-signer-{name}")
    inst.start(*components)
    assert inst.process is not None
    login = "jean.martin@a.example"
    return {"kind": kind, "name": f"mss ({kind})", "ports": inst.ports, "pid": inst.process.pid,
            "ca": inst.ca_file, "stop": inst.stop, "inst": inst, "schema": schema,
            "login": (login, inst.passwords[login])}


def measure(server: dict, port: str, transport: str, concurrency: int, total: int, messages: list[bytes],
            profile: str | None) -> dict:
    """One load on one server: rate, latencies and CPU per message."""
    pid = server["pid"]
    tls_ctx = ssl.create_default_context(cafile=str(server["ca"]))
    spies = []
    if profile and server["inst"] is not None:
        Path(profile).mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        for member in process_tree(pid):  # the server and its SMTP workers
            out = Path(profile) / f"{server['kind']}-{port}-{transport}-c{concurrency}-{member}.txt"
            spies.append(subprocess.Popen(
                [py_spy, "record", "--gil", "--threads", "--format", "raw", "--pid", str(member), "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
    cpu_before = cpu_seconds(pid)
    client_before = time.process_time()
    elapsed, lat = asyncio.run(load(server["ports"][port], tls_ctx if transport == "starttls" else None,
                                    concurrency, total, messages,
                                    server["login"] if port == "submission" else None))
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(30)
    client_cpu = time.process_time() - client_before
    cpu_after = cpu_seconds(pid)
    spent = {p: (u - cpu_before.get(p, (0, 0))[0], k - cpu_before.get(p, (0, 0))[1])
             for p, (u, k) in cpu_after.items()}
    lat.sort()
    return {
        "server": server["name"], "port": port, "transport": transport, "c": concurrency, "msgs": total,
        "rate": total / elapsed,
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "cpu": sum(u + k for u, k in spent.values()) / total * 1000,
        "split": ", ".join(f"{'serve' if p == pid else p}: {u / total * 1000:.2f} user + "
                           f"{k / total * 1000:.2f} sys" for p, (u, k) in spent.items()),
        "client_cpu": client_cpu / total * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=600, help="messages per run (c=1 runs a third)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--servers", default="bare,sqlite,postgresql")
    parser.add_argument("--transports", default="plain,starttls")
    parser.add_argument("--port", default="smtp",
                        help="smtp (the MX), submission (STARTTLS + AUTH PLAIN), or both: smtp,submission")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the servers this many times per case and keep each one's "
                             "median round: a shared machine's load drifts, and the ratio to the "
                             "bare server is only fair between loads run close together")
    parser.add_argument("--workers", type=int, default=None,
                        help="[smtp] workers for the mss servers (default: the configuration's default)")
    parser.add_argument("--signed", action="store_true",
                        help="S/MIME-sign every message (detached, by a CA the mss servers trust): "
                             "the MX and submission then verify each signature, as for real signed mail")
    parser.add_argument("--profile", metavar="DIR",
                        help="record each process of each mss run with py-spy (pip install py-spy) into "
                             "DIR/*.txt (collapsed stacks of the thread holding the GIL: Python CPU)")
    args = parser.parse_args()
    wait_after_last_cleanup()
    work = Path(tempfile.mkdtemp(prefix="smtp-bench-"))
    messages = [make_message(n) for n in range(50)]
    rows = []
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"message {len(messages[0])} bytes; load average before: {os.getloadavg()[0]:.2f}")
    # All servers run side by side from the start; each case loads them in turn.
    signer = signing_pki(work) if args.signed else None
    signed = {}
    if signer is not None:
        signed = {"smtp": sign_messages(messages, signer, "dr.x@b.example"),
                  "submission": sign_messages(messages, signer, "jean.martin@a.example")}
        print(f"signed messages: {len(signed['smtp'][0])} bytes", flush=True)
    servers = [start_server(kind, work, args.workers, signer) for kind in args.servers.split(",")]
    cases = [(port, transport) for port in args.port.split(",") for transport in args.transports.split(",")
             if port != "submission" or transport == "starttls"]  # no AUTH before TLS
    try:
        for port, transport in cases:
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                total = args.messages if concurrency > 1 else max(100, args.messages // 3)
                runs: dict[str, list[dict]] = {server["name"]: [] for server in servers}
                for _round in range(args.rounds):
                    for server in servers:
                        row = measure(server, port, transport, concurrency, total, signed.get(port, messages),
                                      args.profile)
                        runs[server["name"]].append(row)
                        if args.rounds > 1:
                            print(f"  round {_round + 1}: {row['server']:<20} {row['rate']:8.1f} msg/s", flush=True)
                for server in servers:
                    ordered = sorted(runs[server["name"]], key=lambda r: r["rate"])
                    row = ordered[len(ordered) // 2]
                    row["rss"] = peak_rss_mb(server["pid"])
                    rows.append(row)
                    print(f"{row['server']:<20} {port:<10} {transport:<8} c={concurrency:<3} {row['rate']:8.1f} msg/s  "
                          f"p50 {row['p50']:6.1f} ms  p99 {row['p99']:6.1f} ms  peak RSS {row['rss']:.0f} MB  "
                          f"server CPU {row['cpu']:.2f} ms/msg ({row['split']}); client CPU "
                          f"{row['client_cpu']:.2f} ms/msg", flush=True)
    finally:
        for server in servers:
            server["stop"]()
            if server["schema"]:
                drop_schema(server["schema"])
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    print("| server | port | transport | concurrency | messages/s | p50 ms | p99 ms | peak RSS MB "
          "| server CPU ms/msg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['port']} | {r['transport']} | {r['c']} | {r['rate']:.0f} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['rss']:.0f} | {r['cpu']:.2f} |")
    bare = {(r["port"], r["transport"], r["c"]): r["rate"] for r in rows if r["server"].startswith("aiosmtpd")}
    for r in rows:
        key = (r["port"], r["transport"], r["c"])
        if r["server"].startswith("mss") and key in bare:
            print(f"{r['server']} / bare, {r['port']} {r['transport']} c={r['c']}: {r['rate'] / bare[key]:.0%}")
    shutil.rmtree(work, ignore_errors=True)
    CLEANED.write_text(str(time.time()))


if __name__ == "__main__":
    main()
