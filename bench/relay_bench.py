"""Relay throughput: durable enqueue rate, then delivery rate to a TLS SMTP peer on loopback.

Usage: .venv/bin/python bench/relay_bench.py [--messages 300] [--workers 4] [--size 20000]
         [--db-url postgresql+psycopg://root@127.0.0.1:5432/test]
Every delivery is a full SMTP session: STARTTLS with mutual TLS, MAIL, RCPT, DATA.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mssmail.queue.outbound import enqueue
from mssmail.store.service import Store
from tests.integration.test_relay_support import (
    Recorder,
    free_port,
    make_pki,
    peer_tls_context,
    relay_config,
    run_worker,
    start_peer,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--db-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki_a = make_pki(root / "a" / "pki", "Operator A", "a.example")
        pki_b = make_pki(root / "b", "Operator B", "b.example")
        schema = ""
        if args.db_url:  # a throwaway schema of the given PostgreSQL database
            import psycopg

            schema = f"bench_{uuid.uuid4().hex[:10]}"
            plain = args.db_url.replace("postgresql+psycopg", "postgresql")
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            url = f"{args.db_url}?options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{root / 'a' / 'mss.db'}"
        store = Store(url, root / "a" / "blobs")
        store.migrate()
        body = b"x" * 76 + b"\r\n"
        raw = (b"From: a@a.example\r\nTo: b@b.example\r\nSubject: bench\r\n\r\n"
               + body * (args.size // len(body)))
        start = time.perf_counter()
        ids = [enqueue(store, "a@a.example", ["b@b.example"], raw) for _ in range(args.messages)]
        enqueue_s = time.perf_counter() - start
        port = free_port()
        recorder = Recorder()
        peer = start_peer(recorder, port, peer_tls_context(pki_b, pki_a / "ca.pem"))
        config = relay_config(root / "a", port, pki_b / "ca.pem", workers=str(args.workers))
        wanted = set(ids)

        def all_done() -> bool:
            return not any(i["id"] in wanted for i in store.list_outbound())

        start = time.perf_counter()
        ok = asyncio.run(run_worker(config, store, all_done, 600))
        relay_s = time.perf_counter() - start
        peer.stop()
        store.close()
        if schema:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        assert ok and len(recorder.messages) == args.messages, (ok, len(recorder.messages))
        print(f"messages={args.messages} size={len(raw)}B workers={args.workers} db={url.split(':')[0]}")
        print(f"enqueue (durable, fsynced): {args.messages / enqueue_s:.0f} msg/s "
              f"({enqueue_s * 1000 / args.messages:.1f} ms each)")
        print(f"relay (STARTTLS + mutual TLS, one session per message): {args.messages / relay_s:.1f} msg/s")


if __name__ == "__main__":
    main()
