#!/usr/bin/env python3
"""CPU cost of the delivery commit path: prepared deliveries through the group committer.

    .venv/bin/python bench/delivery_commit_bench.py [--batches 400] [--k 4] [--url sqlite]

Builds N batches of k `DeliveryRequest`s (blobs written beforehand, one recipient each,
as in the SMTP acceptance bench), hands each batch to `Store.queue_deliveries` and
waits for its commit before the next one, so each batch is one transaction. Reports
CPU µs per message of the whole process (`time.process_time`) and of the committer
thread alone (/proc schedstat), and wall time per message (SQLite: WAL, fsync on).
Not a test: run by hand under `flock /tmp/mss-bench.lock`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mssmail import audit  # noqa: E402
from mssmail.store.delivery import DeliveryRequest  # noqa: E402
from mssmail.store.service import Store  # noqa: E402
from mssmail.store.summary import summarize  # noqa: E402


def _thread_cpu_ns(native_id: int | None) -> int:
    """CPU time of one thread of this process, from the kernel's scheduler statistics."""
    if native_id is None:
        return 0
    with open(f"/proc/self/task/{native_id}/schedstat") as f:
        return int(f.read().split()[0])


def _requests(store: Store, count: int, address: str) -> list[DeliveryRequest]:
    out = []
    for n in range(count):
        raw = (f"From: a@b.example\r\nTo: {address}\r\nSubject: bench {n}\r\n"
               f"Message-ID: <{n}@b.example>\r\nDate: Sun, 29 Nov 2026 21:00:00 +0000\r\n\r\n"
               + "body line\r\n" * 50).encode()
        out.append(DeliveryRequest(
            summary=summarize(raw), sha=store.blobs.put(raw), size=len(raw), targets=(address,),
            folder="INBOX", flags="", seen=False, deleted=False, when=datetime.now(UTC),
            action=audit.DELIVERY, actor="a@b.example", sender="a@b.example", ip="127.0.0.1",
            extra={"tls": True}))
    return out


def run(url: str, root: Path, batches: int, k: int) -> None:
    store = Store(url, root / "blobs", durable=False)
    store.migrate()
    store.ensure_domain("a.example")
    address = f"claire.durand.{k}@a.example"  # one database URL may serve several runs
    store.create_mailbox(address)
    requests = _requests(store, batches * k, address)
    warm = _requests(store, 4 * k, address)
    for i in range(0, len(warm), k):
        for future in store.queue_deliveries(warm[i:i + k]):
            future.result()
    committer = store._committer._thread.native_id
    times0 = os.times()
    cpu0, thread0, wall0 = time.process_time(), _thread_cpu_ns(committer), time.perf_counter()
    for i in range(0, len(requests), k):
        for future in store.queue_deliveries(requests[i:i + k]):
            future.result()
    cpu = time.process_time() - cpu0
    thread = (_thread_cpu_ns(committer) - thread0) / 1e9
    wall = time.perf_counter() - wall0
    times = os.times()
    user, system = times.user - times0.user, times.system - times0.system
    n = len(requests)
    print(f"{url.split(':')[0]:10} batches={batches} k={k}: process CPU {cpu / n * 1e6:7.1f} µs/msg, "
          f"committer CPU {thread / n * 1e6:7.1f} µs/msg (process user {user / n * 1e6:.0f}, "
          f"sys {system / n * 1e6:.0f}), wall {wall / n * 1e6:7.1f} µs/msg")
    with store.db.read() as s:
        assert audit.verify(s).ok
    store.remove_mailbox(address)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--k", type=int, action="append", help="messages per batch (repeatable)")
    parser.add_argument("--url", default="sqlite", help="'sqlite' (a fresh file) or a database URL")
    args = parser.parse_args()
    for k in args.k or [1, 4, 8]:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/mss.db" if args.url == "sqlite" else args.url
            run(url, Path(tmp), args.batches, k)


if __name__ == "__main__":
    main()
