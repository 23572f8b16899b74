#!/usr/bin/env python3
"""The webmail under load: folder pages of a 100,000-message box, and a message with a
10 MB PDF, over HTTPS keep-alive against a real `mss serve --only web`.

    flock /tmp/mss-bench.lock .venv/bin/python bench/webmail_bench.py [--messages 100000]
        [--db sqlite|postgresql] [--concurrency 8] [--requests 2000] [--opens 20]

Steps: generates the messages of `bench/imap_bench.generate` (a few KB each, one in
eight with an attachment) plus one message carrying a 10 MB PDF, loads them into one
mailbox through the store API (batches of 1,000), starts `mss serve --only web`, reads
its RSS before any request (idle), logs in like a browser (password, then the TOTP
enrolment page's secret and a code computed with pyotp), then:

- folder pages of 50 rows, the first page and page 1,000 (`?avant=UID`): `--requests`
  GETs spread over `--concurrency` TLS keep-alive connections (asyncio streams, one
  request at a time per connection, the session cookie of the login), after 200
  warm-up requests; latency p50/p95/p99 and pages per second;
- the message with the 10 MB PDF: `--opens` sequential opens of the message page
  (parse, text, the attachment list; the first marks it \\Seen), then the attachments
  ZIP and the PDF part, each read to the last byte; then 4 opens at once;
- RSS of the server process (VmRSS, and VmHWM: its peak) at each stage;
- with `--rate R` (repeatable): the same two pages at R requests a second offered, open
  loop, for `--rate-seconds` each: each request is due at its time and its latency runs
  from then, over a pool of 32 connections (the closed loop above measures latency at
  saturation: `concurrency` requests always queued);
- with `--loop-check`: the server restarted in asyncio's debug mode (PYTHONASYNCIODEBUG=1;
  `mss serve` sets `slow_callback_duration` to 50 ms), the folder pages and the big
  message again, and the loop callbacks asyncio logged as slower than 50 ms counted
  (debug mode itself slows the server: an upper bound);
- with `--smtp N`: `mss serve --only web,smtp` (the web in its child process, the
  default), N messages of bench/smtp_accept_bench.py sent to the MX at concurrency 8
  alone, then the same while the folder pages are loaded at concurrency 8 by a child
  process of this script; the acceptance rate lost under the web load (issue 14: <= 10%);
  then the same with `[web] child_process = false` (the web on the MX's loop), and with
  `--smtp-split` the MX and the web as two `mss serve --only` processes (`--web-nice N`
  runs that web process under `nice -n N`).

The client runs in this process, the server in its own; on a shared 2-core machine both
compete with whatever else runs (the load average is recorded). Prints a table and
writes JSON to bench/results/. Not a test: results go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import ssl
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyotp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.imap_bench import bench_box, generate  # noqa: E402
from tests.support.instance import MssInstance  # noqa: E402

DOMAIN = "bench.example"
USER = f"bench@{DOMAIN}"
PASSWORD = "Bench-password-2026"
PDF_SIZE = 10 * 1024 * 1024
PAGE = 50
COOKIE = "__Host-mss_session"


def big_message(seed: int = 7) -> bytes:
    """A letter with a 10 MB PDF (base64: about 14 MB stored), as a lab would send."""
    import random

    rng = random.Random(seed)
    pdf = b"%PDF-1.4\n" + rng.randbytes(PDF_SIZE - 9)
    b64 = base64.encodebytes(pdf).replace(b"\n", b"\r\n")
    head = (f"From: Laboratoire <labo@labo-bio.example>\r\nTo: {USER}\r\n"
            "Subject: Imagerie - dossier complet\r\nDate: Mon, 07 Dec 2026 08:00:00 +0000\r\n"
            "Message-ID: <big.1@labo-bio.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="=_big"\r\n\r\n'
            "--=_big\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Bonjour,\r\n\r\nVeuillez trouver le dossier d'imagerie complet.\r\n\r\n"
            "--=_big\r\nContent-Type: application/pdf; name=\"imagerie.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"imagerie.pdf\"\r\n\r\n").encode()
    return head + b64 + b"--=_big--\r\n"


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15):
    what a request costs the server, less sensitive to the other load on the machine
    than wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(inst: MssInstance) -> int:
    """The process serving the web: `mss serve`'s `python -m webmail.process` child (the
    default, `[web] child_process = true`), else `mss serve` itself."""
    assert inst.process is not None
    parent = inst.process.pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                if b"webmail.process" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
        if inst.env.get("MSS_WEB_CHILD_PROCESS") == "false":
            break
        time.sleep(0.1)
    return parent


def load(inst: MssInstance, messages: list, big: bytes) -> tuple[float, int]:
    """Append the messages through the store API; the big one last. Returns (seconds,
    the big one's UID)."""
    from mssmail.config import load_config
    from mssmail.store.service import Store

    store = Store.from_config(load_config(inst.data))
    started = time.monotonic()
    try:
        for start in range(0, len(messages), 1000):
            batch = [(raw, flags, when) for raw, when, flags in messages[start:start + 1000]]
            store.messages_append(USER, USER, "INBOX", batch)
        _validity, uids = store.messages_append(USER, USER, "INBOX", [(big, [], None)])
    finally:
        store.close()
    return time.monotonic() - started, uids[0]


def login(base: str, ca: Path, secret: str | None = None) -> tuple[str, int, str]:
    """Password, then TOTP enrolment (or, with the `secret` of an earlier enrolment, the
    code page): the session cookie, the folder's UIDVALIDITY (read from the first message
    link of the inbox) and the TOTP secret."""
    with httpx.Client(base_url=base, verify=str(ca), follow_redirects=False, timeout=60) as client:
        page = client.get("/connexion")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = client.post("/connexion", data={"csrf": token, "adresse": USER, "mot_de_passe": PASSWORD,
                                                 "suite": "/"})
        assert answer.status_code == 303, answer.text
        step = "/connexion/code" if secret else "/connexion/activation"
        page = client.get(step)
        if secret is None:
            secret = re.search(r'<code id="totp-secret">([^<]+)</code>', page.text).group(1)  # type: ignore[union-attr]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        answer = client.post(step, data={
            "csrf": csrf, "code": pyotp.TOTP(secret.replace(" ", "")).now(), "suite": "/"})
        assert answer.status_code == 303, answer.text
        cookie = client.cookies.get(COOKIE)
        assert cookie
        inbox = client.get(f"/b/{USER}/INBOX")
        validity = int(re.search(r"/INBOX/(\d+)/\d+\"", inbox.text).group(1))  # type: ignore[union-attr]
        return cookie, validity, secret


class Connection:
    """One HTTPS keep-alive connection, one request at a time (HTTP/1.1)."""

    def __init__(self, port: int, context: ssl.SSLContext, cookie: str) -> None:
        self.port, self.context, self.cookie = port, context, cookie
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.context,
                                                                 server_hostname="localhost")

    async def get(self, path: str) -> tuple[int, int]:
        """(status, body octets) once the whole body has arrived."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost:{self.port}\r\n"
                          f"Cookie: {COOKIE}={self.cookie}\r\nAccept-Encoding: identity\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
        if b"content-length" in headers:
            size = int(headers[b"content-length"])
            remaining = size
            while remaining:
                chunk = await self.reader.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ConnectionError("closed mid-body")
                remaining -= len(chunk)
            return status, size
        size = 0  # chunked (streamed parts and ZIPs)
        while True:
            line = await self.reader.readuntil(b"\r\n")
            length = int(line.split(b";")[0], 16)
            if length == 0:
                await self.reader.readuntil(b"\r\n")
                return status, size
            await self.reader.readexactly(length + 2)
            size += length

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self.writer.wait_closed()


def client_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the certificate names the mail domain, we dial 127.0.0.1
    return context


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"n": len(ordered), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 2)}


async def hammer(port: int, ca: Path, cookie: str, path: str, total: int, concurrency: int,
                 expect: bytes | None = None) -> dict[str, Any]:
    """`total` GETs of `path` over `concurrency` keep-alive connections."""
    context = client_context(ca)
    connections = [Connection(port, context, cookie) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    latencies: list[float] = []
    left = [total]
    statuses: dict[int, int] = {}

    async def worker(connection: Connection) -> None:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            status, _size = await connection.get(path)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in connections))
    result = percentiles(latencies)
    result.update({"pages_per_s": round(total / elapsed, 1), "statuses": statuses, "concurrency": concurrency})
    return result


async def offered(port: int, ca: Path, cookie: str, path: str, rate: float, seconds: float,
                  pool: int = 32) -> dict[str, Any]:
    """GETs of `path` at a fixed offered rate (open loop), whatever the answers' pace: the
    i-th request is due at start + i / rate and its latency runs from then, so time spent
    waiting for a free connection counts (no coordinated omission). Why: the closed loop
    of `hammer` keeps `concurrency` requests queued at the server, so its latency is the
    queue's at saturation (Little's law: concurrency / throughput), not what a user sees
    at a given load. `pool` keep-alive connections serve the requests."""
    context = client_context(ca)
    connections = [Connection(port, context, cookie) for _ in range(pool)]
    await asyncio.gather(*(c.open() for c in connections))
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in connections:
        idle.put_nowait(connection)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = int(rate * seconds)

    async def one(due: float) -> None:
        connection = await idle.get()
        try:
            status, _size = await connection.get(path)
        finally:
            idle.put_nowait(connection)
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    tasks = []
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in connections))
    result = percentiles(latencies)
    result.update({"offered_per_s": rate, "pages_per_s": round(total / elapsed, 1), "statuses": statuses,
                   "pool": pool})
    return result


async def sequential(port: int, ca: Path, cookie: str, path: str, count: int) -> dict[str, Any]:
    connection = Connection(port, client_context(ca), cookie)
    await connection.open()
    latencies: list[float] = []
    sizes = set()
    for _ in range(count):
        started = time.perf_counter()
        status, size = await connection.get(path)
        latencies.append(time.perf_counter() - started)
        assert status == 200, (path, status)
        sizes.add(size)
    await connection.close()
    result = percentiles(latencies)
    result["bytes"] = max(sizes)
    return result


async def at_once(port: int, ca: Path, cookie: str, path: str, count: int) -> dict[str, Any]:
    context = client_context(ca)
    connections = [Connection(port, context, cookie) for _ in range(count)]
    await asyncio.gather(*(c.open() for c in connections))
    started = time.perf_counter()
    results = await asyncio.gather(*(c.get(path) for c in connections))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in connections))
    assert all(status == 200 for status, _ in results)
    return {"count": count, "all_done_ms": round(elapsed * 1000, 1)}


def check_page(port: int, ca: Path, cookie: str, path: str) -> None:
    """The page is a real folder page of 50 rows (not a redirect or an error)."""
    with httpx.Client(verify=str(ca), timeout=60) as client:
        client.cookies.set(COOKIE, cookie, domain="127.0.0.1")
        answer = client.get(f"https://127.0.0.1:{port}{path}", headers={"Cookie": f"{COOKIE}={cookie}"})
    rows = answer.text.count('<tr class="')
    assert answer.status_code == 200 and rows == PAGE, (path, answer.status_code, rows)


def slow_callbacks(log: Path, start: int) -> list[str]:
    """asyncio's "Executing <Handle ...> took 0.123 seconds" lines logged after `start`."""
    text = log.read_text(errors="replace")[start:]
    return [line[:300] for line in text.splitlines() if "Executing" in line and "took" in line]


async def smtp_load(port: int, total: int, concurrency: int) -> dict[str, Any]:
    """`total` messages to the MX over `concurrency` connections (the SMTP bench's client)."""
    from bench import smtp_accept_bench as sab

    messages = [sab.make_message(n).replace(b"To: claire.durand@a.example", f"To: {USER}".encode(), 1)
                for n in range(50)]

    elapsed, latencies = await sab.load(port, None, concurrency, total, messages, recipient=USER)
    result = percentiles(latencies)
    result["messages_per_s"] = round(total / elapsed, 1)
    return result


def _browse_apart(web_port: int, ca: str, cookie: str, path: str, concurrency: int, stop: Any,
                  pages: Any) -> None:
    """The folder-page load of `smtp_under_web`, in a process of its own (see there)."""
    async def browse() -> None:
        connection = Connection(web_port, client_context(Path(ca)), cookie)
        await connection.open()
        while not stop.is_set():
            await connection.get(path)
            with pages.get_lock():
                pages.value += 1
        await connection.close()

    async def main() -> None:
        await asyncio.gather(*(browse() for _ in range(concurrency)))

    asyncio.run(main())


async def smtp_under_web(smtp_port: int, web_port: int, ca: Path, cookie: str, path: str, total: int,
                         concurrency: int, browsers_apart: bool = False) -> dict[str, Any]:
    """The SMTP load while `concurrency` connections keep asking for folder pages. With
    `browsers_apart`, those connections run in a child process: otherwise this process's
    one loop decrypts and reads the pages too, and the SMTP client's replies wait behind
    them, which counts the client's own contention as lost acceptance (the senders and
    the doctors' browsers are different machines)."""
    if browsers_apart:
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        stop, counter = spawn.Event(), spawn.Value("l", 0)
        child = spawn.Process(target=_browse_apart, args=(web_port, str(ca), cookie, path, concurrency, stop,
                                                          counter))
        child.start()
        deadline = time.monotonic() + 60
        while counter.value < 50 and time.monotonic() < deadline:  # the browsers are up and warm
            await asyncio.sleep(0.1)
        started = time.perf_counter()
        pages_before = counter.value
        try:
            result = await smtp_load(smtp_port, total, concurrency)
        finally:
            pages_after = counter.value
            elapsed = time.perf_counter() - started
            stop.set()
            await asyncio.get_running_loop().run_in_executor(None, child.join, 30)
        result["pages_per_s_meanwhile"] = round((pages_after - pages_before) / elapsed, 1)
        result["browsers"] = "a child process"
        return result
    done = asyncio.Event()
    pages = [0]
    context = client_context(ca)

    async def browse() -> None:
        connection = Connection(web_port, context, cookie)
        await connection.open()
        while not done.is_set():
            await connection.get(path)
            pages[0] += 1
        await connection.close()

    browsers = [asyncio.ensure_future(browse()) for _ in range(concurrency)]
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    pages_before = pages[0]
    try:
        result = await smtp_load(smtp_port, total, concurrency)
    finally:
        done.set()
        await asyncio.gather(*browsers)
    result["pages_per_s_meanwhile"] = round((pages[0] - pages_before) / (time.perf_counter() - started), 1)
    result["browsers"] = "this process"
    return result


def smtp_split(inst: MssInstance, ca: Path, cookie: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The SMTP measure again with the MX and the web in two processes, `mss serve --only
    smtp` and `mss serve --only web` on the same data (the scale-out DESIGN rule 5
    allows): the kernel then shares the cores between them, where in one process the
    SMTP sessions wait behind the pages on the one loop."""
    inst.stop()
    inst.start("smtp")
    smtp_process, inst.process = inst.process, None
    try:
        inst.start("web", wrapper=("nice", "-n", str(args.web_nice)) if args.web_nice else ())
        port, smtp_port = inst.ports["web"], inst.ports["smtp"]
        asyncio.run(smtp_load(smtp_port, 100, args.concurrency))  # warm-up
        alone = asyncio.run(smtp_load(smtp_port, args.smtp, args.concurrency))
        loaded = asyncio.run(smtp_under_web(smtp_port, port, ca, cookie, path, args.smtp, args.concurrency,
                                            browsers_apart=True))
    finally:
        inst.stop()
        inst.process = smtp_process
        inst.stop()
    result = {"smtp_alone": alone, "smtp_under_web": loaded, "web_nice": args.web_nice,
              "smtp_loss_percent": round(100 * (1 - loaded["messages_per_s"] / alone["messages_per_s"]), 1)}
    print(f"two processes: SMTP alone {alone['messages_per_s']} msg/s, under the web load "
          f"{loaded['messages_per_s']} msg/s ({loaded['pages_per_s_meanwhile']} pages/s) "
          f"-> loss {result['smtp_loss_percent']} %", flush=True)
    return result


def reopen(data: Path) -> MssInstance:
    """The instance a `--keep` run left in `data`, on fresh ports (no `mss init`)."""
    from tests.support.instance import PORT_KEYS, free_port, set_toml

    inst = MssInstance.__new__(MssInstance)
    inst.data, inst.domain = data, DOMAIN
    inst.env = {**os.environ}
    inst.env.pop("MSS_DATA", None)
    inst.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), inst.env.get("PYTHONPATH", "")) if p)
    inst.process, inst.output, inst.passwords = None, [], {}
    inst.ports = {key: free_port() for key in PORT_KEYS}
    inst.config_path = data / "mss.toml"
    for key, port in inst.ports.items():
        set_toml(inst.config_path, key, "port", str(port))
    return inst


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.reuse:
        return run_in(Path(args.reuse), args, reuse=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="webmail-bench-"))
    if args.keep:
        work.mkdir(parents=True, exist_ok=False)
    try:
        return run_in(work, args, reuse=False)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run_in(work: Path, args: argparse.Namespace, *, reuse: bool) -> dict[str, Any]:
    """The measures on the box in `work`: generated and loaded there first unless `reuse`
    (a `--keep` run's directory: its box, big message UID and TOTP secret in kept.json;
    SQLite only, and each `--smtp` run adds its messages to the box)."""
    schema = None
    inst: MssInstance | None = None
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "db": args.db,
        "messages": args.messages, "concurrency": args.concurrency, "requests": args.requests,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": os.getloadavg()}}
    try:
        kept_file = work / "kept.json"
        secret: str | None = None
        if reuse:
            kept = json.loads(kept_file.read_text())
            if kept["messages"] != args.messages or args.db != "sqlite":
                raise SystemExit(f"--reuse {work}: a box of {kept['messages']} messages on SQLite")
            big_uid, secret = kept["big_uid"], kept["secret"]
            inst = reopen(work / "mss")
            report["reused"] = str(work)
        else:
            t0 = time.monotonic()
            messages = generate(args.messages)
            big = big_message()
            report["generate_s"] = round(time.monotonic() - t0, 1)
            report["big_message_bytes"] = len(big)
            print(f"{len(messages)} messages generated in {report['generate_s']} s; big one {len(big) / 1e6:.1f} MB",
                  flush=True)
            inst, schema = bench_box(work, args.db)
            load_s, big_uid = load(inst, messages, big)
            del messages
            report["load_s"] = round(load_s, 1)
            print(f"loaded in {load_s:.1f} s", flush=True)
        inst.start("web")
        pid, port, ca = server_pid(inst), inst.ports["web"], inst.ca_file
        time.sleep(2)
        report["rss_idle"] = rss(pid)
        assert inst.process is not None
        report["web_process"] = "child" if pid != inst.process.pid else "mss serve"
        report["rss_idle_mss_serve"] = rss(inst.process.pid)
        print(f"RSS idle: {report['rss_idle']} (the {report['web_process']} process; mss serve "
              f"{report['rss_idle_mss_serve']})", flush=True)
        cookie, validity, secret = login(f"https://127.0.0.1:{port}", ca, secret)
        if args.keep and not reuse:
            kept_file.write_text(json.dumps({"messages": args.messages, "big_uid": big_uid, "secret": secret}))
        report["rss_after_login"] = rss(pid)
        first = f"/b/{USER}/INBOX"
        total = args.messages + 1
        deep_page = min(1000, total // PAGE)  # page 1,000 at 100,000 messages
        report["deep_page"] = deep_page
        deep = f"/b/{USER}/INBOX?avant={total - PAGE * (deep_page - 1) + 1}"
        check_page(port, ca, cookie, first)
        check_page(port, ca, cookie, deep)
        asyncio.run(hammer(port, ca, cookie, first, 200, args.concurrency))  # warm-up
        for key, path in (("folder_first_page", first), ("folder_page_1000", deep)):
            cpu = cpu_seconds(pid)
            report[key] = asyncio.run(hammer(port, ca, cookie, path, args.requests, args.concurrency))
            report[key]["server_cpu_ms_per_page"] = round((cpu_seconds(pid) - cpu) / args.requests * 1000, 2)
            print(f"{key} (page {1 if path == first else deep_page}): {report[key]}", flush=True)
        for position, rate in enumerate(args.rate):
            for key, path in (("first_page", first), ("page_1000", deep)):
                cpu = cpu_seconds(pid)
                name = f"offered_{position}_{int(rate)}_{key}"  # the run's position: a rate may be repeated
                report[name] = asyncio.run(offered(port, ca, cookie, path, rate, args.rate_seconds))
                report[name]["server_cpu_ms_per_page"] = round(
                    (cpu_seconds(pid) - cpu) / max(1, report[name]["n"]) * 1000, 2)
                print(f"{name}: {report[name]}", flush=True)
        report["rss_after_pages"] = rss(pid)
        if not args.only_pages:  # the big message, and the loop check
            message = f"/b/{USER}/INBOX/{validity}/{big_uid}"
            cpu = cpu_seconds(pid)
            report["big_open"] = asyncio.run(sequential(port, ca, cookie, message, args.opens))
            report["big_open"]["server_cpu_ms_per_open"] = round((cpu_seconds(pid) - cpu) / args.opens * 1000, 1)
            print(f"open (10 MB PDF): {report['big_open']}", flush=True)
            report["big_zip"] = asyncio.run(sequential(port, ca, cookie, message + "/pieces-jointes.zip", 5))
            print(f"ZIP: {report['big_zip']}", flush=True)
            report["big_part"] = asyncio.run(sequential(port, ca, cookie, message + "/partie/2", 5))
            print(f"PDF part: {report['big_part']}", flush=True)
            report["rss_after_big"] = rss(pid)
            report["big_open_4_at_once"] = asyncio.run(at_once(port, ca, cookie, message, 4))
            report["rss_after_4_at_once"] = rss(pid)
            print(f"4 opens at once: {report['big_open_4_at_once']}, RSS {report['rss_after_4_at_once']}", flush=True)
            if args.loop_check:
                inst.stop()
                log = inst.data / "logs" / "serve.log"
                start = log.stat().st_size if log.exists() else 0
                inst.env["PYTHONASYNCIODEBUG"] = "1"
                inst.start("web")
                inst.env.pop("PYTHONASYNCIODEBUG")
                port = inst.ports["web"]
                asyncio.run(hammer(port, ca, cookie, first, 200, args.concurrency))
                for key, path in (("first", first), ("deep", deep)):
                    report[f"debug_folder_{key}"] = asyncio.run(hammer(port, ca, cookie, path, args.requests // 2,
                                                                       args.concurrency))
                asyncio.run(sequential(port, ca, cookie, message, 5))
                asyncio.run(sequential(port, ca, cookie, message + "/pieces-jointes.zip", 2))
                asyncio.run(at_once(port, ca, cookie, message, 4))
                slow = slow_callbacks(log, start)
                report["slow_callbacks_over_50ms"] = {"count": len(slow), "first": slow[:10]}
                print(f"loop callbacks over 50 ms (debug mode): {len(slow)}", *slow[:5], sep="\n  ", flush=True)
        if args.smtp:
            inst.stop()
            inst.configure("trust", "domains", '["b.example"]')
            # `mss serve --only web,smtp` as deployed (the web in its child process), then with
            # `[web] child_process = false` (both on one loop) for comparison; the browsers
            # in a process of this script's own (see `smtp_under_web`).
            for key, in_process in (("", False), ("_in_process", True)):
                if in_process:
                    inst.env["MSS_WEB_CHILD_PROCESS"] = "false"
                inst.start("web", "smtp")
                inst.env.pop("MSS_WEB_CHILD_PROCESS", None)
                port, smtp_port = inst.ports["web"], inst.ports["smtp"]
                asyncio.run(smtp_load(smtp_port, 100, args.concurrency))  # warm-up
                alone = asyncio.run(smtp_load(smtp_port, args.smtp, args.concurrency))
                loaded = asyncio.run(smtp_under_web(smtp_port, port, ca, cookie, first, args.smtp,
                                                    args.concurrency, browsers_apart=True))
                inst.stop()
                loss = round(100 * (1 - loaded["messages_per_s"] / alone["messages_per_s"]), 1)
                report[f"smtp_alone{key}"], report[f"smtp_under_web{key}"] = alone, loaded
                report[f"smtp_loss_percent{key}"] = loss
                what = "web in process" if in_process else "web child process"
                print(f"SMTP c={args.concurrency} ({what}): alone {alone['messages_per_s']} msg/s, under the "
                      f"web load {loaded['messages_per_s']} msg/s ({loaded['pages_per_s_meanwhile']} pages/s) "
                      f"-> loss {loss} %", flush=True)
            if args.smtp_split:
                report["smtp_split"] = smtp_split(inst, ca, cookie, first, args)
        report["machine"]["load_average_after"] = os.getloadavg()
    finally:
        if inst is not None:
            inst.stop()
        if schema:
            from tests.conftest import _drop_schema
            _drop_schema(schema)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--opens", type=int, default=20)
    parser.add_argument("--loop-check", action="store_true",
                        help="again in asyncio debug mode, counting loop callbacks over 50 ms")
    parser.add_argument("--smtp", type=int, default=0, metavar="N",
                        help="N messages to the MX at the concurrency, alone then under the folder-page load")
    parser.add_argument("--smtp-split", action="store_true",
                        help="with --smtp, also `mss serve --only smtp` and `--only web` as two processes")
    parser.add_argument("--web-nice", type=int, default=0, metavar="N",
                        help="with --smtp: the web's own process (the two-process measure) under nice -n N")
    parser.add_argument("--keep", metavar="DIR",
                        help="generate and load the box in DIR (new) and keep it there for --reuse (SQLite)")
    parser.add_argument("--reuse", metavar="DIR",
                        help="measure the box a --keep run left in DIR (same --messages), without generating it")
    parser.add_argument("--rate", type=float, action="append", default=[], metavar="PAGES_PER_S",
                        help="also the folder pages at this offered rate (open loop: latency from each "
                             "request's due time); repeat for several rates")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="how long each --rate run lasts")
    parser.add_argument("--only-pages", action="store_true",
                        help="the folder pages (and --smtp) only, not the big message: for comparing changes")
    args = parser.parse_args()
    report = run(args)
    rows = [("folder, first page", report["folder_first_page"]), ("folder, page 1,000", report["folder_page_1000"])]
    for position, rate in enumerate(args.rate):
        rows += [(f"first page at {rate:g}/s offered", report[f"offered_{position}_{int(rate)}_first_page"]),
                 (f"page 1,000 at {rate:g}/s offered", report[f"offered_{position}_{int(rate)}_page_1000"])]
    if "big_open" in report:
        rows += [("open, 10 MB PDF", report["big_open"]), ("ZIP of its attachments", report["big_zip"]),
                 ("its PDF part", report["big_part"])]
    print(f"\n{'':28} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'pages/s':>8} {'CPU ms':>7}")
    for name, r in rows:
        cpu = r.get("server_cpu_ms_per_page", r.get("server_cpu_ms_per_open", ""))
        print(f"{name:28} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r.get('pages_per_s', ''):>8} {cpu:>7}")
    print(f"RSS idle {report['rss_idle']}, after pages {report['rss_after_pages']}, "
          f"after 4 big opens at once {report.get('rss_after_4_at_once')}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"webmail-{args.db}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
