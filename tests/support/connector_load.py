"""End-to-end load of the connector path, shared by the kill -9 integration test and
`bench/connector_e2e.py`: a lab of another operator (b.example, in the space of trust)
sends distinct HPRIM Net results by SMTP to the DUI application mailbox at a fixed rate;
the demo's folder connector drops each into `DATA/connectors/dui/`; a "DUI" thread takes
every file away as it appears (as practice software does) and notes when it saw it.

What it measures: per message, SMTP `250` (the end of DATA) to the file seen in the
folder; lost (acknowledged, never delivered) and duplicated (more than one file for one
message). With `kills`, `mss serve` gets SIGKILL at random moments of the load and is
started again at once; a message whose transaction failed (connection refused or cut
before 250) is sent again by the lab, with the same Message-ID, as a real MTA retries:
the connector's job key (mailbox, Message-ID, part, target) makes that one file even when
the first attempt was committed but its 250 never arrived.
"""

from __future__ import annotations

import contextlib
import os
import random
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.instance import MssInstance

SAMPLE = Path(__file__).parents[1] / "data" / "samples" / "hprnet_01_abnormal.hpr"
LAB = "labo@b.example"
DOMAIN = "a.example"


def hprim_for(n: int) -> bytes:
    """The sample with the patient id (line 1) and request id (line 9) made unique."""
    lines = SAMPLE.read_bytes().split(b"\r\n")
    lines[0] = f"L{n:09d}".encode()
    lines[8] = f"R{n:09d}".encode()
    return b"\r\n".join(lines)


def message(n: int, to: str) -> bytes:
    data = hprim_for(n)
    import base64

    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (f"From: Laboratoire B <{LAB}>\r\nTo: {to}\r\nSubject: Resultats {n}\r\n"
            f"Message-ID: <load-{n}@b.example>\r\nDate: Mon, 07 Dec 2026 01:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nResultats ci-joints.\r\n"
            f"--b\r\nContent-Type: application/octet-stream; name=\"r{n}.hpr\"\r\n"
            f"Content-Disposition: attachment; filename=\"r{n}.hpr\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + body + b"--b--\r\n"


@dataclass
class LoadResult:
    sent: int
    acked: dict[int, float] = field(default_factory=dict)  # n -> time of the (last) 250
    seen: dict[int, float] = field(default_factory=dict)  # n -> time the first file was seen
    files: Counter[int] = field(default_factory=Counter)  # n -> files seen
    attempts: int = 0
    failures: int = 0
    kills: list[float] = field(default_factory=list)
    duration: float = 0.0
    started: float = 0.0  # time.monotonic() of the load's start: message n is due at started + n / rate
    rate: float = 0.0

    def intake_lags(self) -> list[float]:
        """Per acknowledged message, its (last) 250 minus when it was due: how far the
        SMTP intake fell behind the offered rate (seconds, sorted)."""
        if not self.rate:
            return []
        return sorted(max(0.0, acked - (self.started + n / self.rate)) for n, acked in self.acked.items())

    @property
    def lost(self) -> list[int]:
        return sorted(n for n in self.acked if self.files[n] == 0)

    @property
    def duplicated(self) -> list[int]:
        return sorted(n for n, count in self.files.items() if count > 1)

    def latencies(self, exclude_kill_window: float = 0.0) -> list[float]:
        """250 -> file, in seconds; with `exclude_kill_window`, messages acknowledged
        within that many seconds before a kill are left out (they waited for the restart)."""
        out = []
        for n, acked in self.acked.items():
            if n not in self.seen:
                continue
            if exclude_kill_window and any(0 <= k - acked < exclude_kill_window for k in self.kills):
                continue
            out.append(max(0.0, self.seen[n] - acked))
        return sorted(out)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[index]


class _Dui(threading.Thread):
    """Takes each file away as it appears and notes which message it was."""

    def __init__(self, folder: Path, taken: Path, result: LoadResult) -> None:
        super().__init__(daemon=True)
        self.folder, self.taken, self.result = folder, taken, result
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sweep()
            time.sleep(0.005)
        self.sweep()

    def sweep(self) -> None:
        try:
            entries = [e for e in os.scandir(self.folder) if e.is_file() and not e.name.startswith(".")]
        except FileNotFoundError:
            return
        now = time.monotonic()
        for entry in entries:
            path = Path(entry.path)
            try:
                first = path.read_bytes().split(b"\r\n", 1)[0]
                n = int(first[1:].decode())
                os.replace(path, self.taken / path.name)
            except (FileNotFoundError, ValueError):
                continue
            with self.lock:
                self.result.files[n] += 1
                self.result.seen.setdefault(n, now)


def make_instance(data: Path, *, database_url: str | None = None, workers: int = 2) -> tuple[MssInstance, Path]:
    inst = MssInstance(data, DOMAIN, database_url=database_url)
    inst.configure("connectors", "workers", str(workers))
    inst.configure("trust", "domains", '["b.example"]')
    inst.configure("connectors", "poll_interval", '"1s"')
    inst.configure("connectors", "lease", '"3s"')
    folder = (inst.data / "connectors" / "dui").resolve()
    return inst, folder


def run_load(inst: MssInstance, folder: Path, *, count: int, rate: float, connections: int = 4,
             kills: int = 0, drain_timeout: float = 120.0, seed: int = 7) -> LoadResult:
    """Send `count` messages at `rate` per second (open loop: message n is due at
    n/rate), killing `mss serve` `kills` times at random moments of the load, then wait
    until every acknowledged message has its file (or `drain_timeout`)."""
    result = LoadResult(sent=count)
    taken = folder.parent / "dui-taken"
    taken.mkdir(exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    dui = _Dui(folder, taken, result)
    dui.start()
    to = f"dui@{DOMAIN}"
    lock = threading.Lock()
    pending: list[int] = list(range(count))  # messages not acknowledged yet, in order
    retry: list[int] = []
    start = time.monotonic()
    result.started, result.rate = start, rate
    span = count / rate
    rng = random.Random(seed)
    kill_at = sorted(start + rng.uniform(0.1, 0.9) * span for _ in range(kills))
    restarting = threading.Event()
    stop = threading.Event()

    def next_job() -> int | None:
        with lock:
            if retry:
                return retry.pop(0)
            if pending:
                return pending.pop(0)
        return None

    def sender() -> None:
        client: smtplib.SMTP | None = None
        while not stop.is_set():
            n = next_job()
            if n is None:
                with lock:
                    if not pending and not retry and len(result.acked) >= count:
                        break
                time.sleep(0.02)
                continue
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            while restarting.is_set():
                time.sleep(0.05)
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30)
                    client.ehlo("labo.b.example")
                with lock:
                    result.attempts += 1
                client.sendmail(LAB, [to], message(n, to))
                with lock:
                    result.acked[n] = time.monotonic()
            except (smtplib.SMTPException, OSError):
                with lock:
                    result.failures += 1
                    retry.append(n)
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
                client = None
                time.sleep(0.1)
        if client is not None:
            with contextlib.suppress(Exception):
                client.quit()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for moment in kill_at:
        time.sleep(max(0.0, moment - time.monotonic()))
        restarting.set()
        inst.kill()  # SIGKILL: no clean shutdown
        result.kills.append(time.monotonic())
        inst.start("smtp", "connectors")
        restarting.clear()
    deadline = time.monotonic() + span + drain_timeout
    while time.monotonic() < deadline:
        with lock:
            done = len(result.acked) >= count and all(n in result.seen for n in result.acked)
        if done:
            break
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(30)
    time.sleep(1.0)  # a late duplicate would show up here
    dui.stop.set()
    dui.join(10)
    result.duration = time.monotonic() - start
    return result
