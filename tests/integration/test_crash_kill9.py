"""Crash safety: `kill -9` during a load of 1,000 messages on 8 connections; every
message that got 250 is in the store after restart, byte-identical, and none twice."""

from __future__ import annotations

import hashlib
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mssmail.store.service import Store
from tests.support.instance import MssInstance
from tests.support.mailbox import summaries

pytestmark = pytest.mark.timeout(300)
TOTAL = 1000
CONNECTIONS = 8


def message(n: int) -> bytes:
    return (f"From: dr.x@b.example\r\nTo: claire.durand@a.example\r\nSubject: load {n}\r\n"
            f"Message-ID: <load-{n}@a.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\n"
            f"Résultat {n}\r\n").encode() + bytes([n % 256]) * 512 + b"\r\n"


def strip_trace(stored: bytes) -> bytes:
    """Without our Authentication-Results and Received (the two fields we prepend)."""
    for _ in range(2):
        end = stored.index(b"\r\n")
        while stored[end + 2:end + 3] in (b"\t", b" "):
            end = stored.index(b"\r\n", end + 2)
        stored = stored[end + 2:]
    return stored


@pytest.mark.parametrize("workers", [0, 2])
def test_kill9_during_load_loses_nothing_acknowledged(tmp_path: Path, workers: int):
    """With workers, `kill -9` hits `mss serve` only: its SMTP workers die with it."""
    inst = MssInstance(tmp_path / "a", "a.example")
    inst.configure("smtp", "workers", str(workers))
    inst.configure("trust", "domains", '["b.example"]')  # the MX takes no local sender
    inst.start("smtp")
    acked: list[int] = []
    lock = threading.Lock()
    killed = threading.Event()

    def sender(worker: int) -> None:
        client = None
        for n in range(worker, TOTAL, CONNECTIONS):
            if killed.is_set():
                return
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=10)
                    client.ehlo("load.a.example")
                client.sendmail("dr.x@b.example", ["claire.durand@a.example"], message(n))
            except (smtplib.SMTPException, OSError):
                return
            with lock:
                acked.append(n)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(CONNECTIONS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= TOTAL // 3:
                break
        time.sleep(0.01)
    inst.kill()  # SIGKILL, no clean shutdown
    killed.set()
    for t in threads:
        t.join(30)
    assert TOTAL // 3 <= len(acked) < TOTAL, "the kill must land in the middle of the load"

    inst.start("smtp")  # the server comes back on the same data
    assert inst.stop() == 0
    # The chain is keyed (DATA/pki/audit.key): verified as an operator would, with the key,
    # before this test's own store (which has no key) reads anything.
    verified = inst.mss("audit", "verify", check=False)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
    with Store(f"sqlite:///{inst.data / 'mss.db'}", inst.data / "blobs", pool_size=2) as store:
        stored = summaries(store, "claire.durand@a.example")
        counts = Counter(m.message_id for m in stored)
        assert max(counts.values()) == 1, "a message was stored twice"
        by_id = {m.message_id: m for m in stored}
        for n in acked:
            row = by_id.get(f"<load-{n}@a.example>")
            assert row is not None, f"message {n} got 250 but is not in the store"
            blob = store.blobs.read(row.sha256)
            assert hashlib.sha256(blob).hexdigest() == row.sha256
            assert strip_trace(blob) == message(n)
