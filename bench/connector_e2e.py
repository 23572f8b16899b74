#!/usr/bin/env python3
"""End to end through the connector (issue 13 part 12): SMTP `250` to the file in the DUI
folder, and exactly once across `kill -9`.

    .venv/bin/python bench/connector_e2e.py [--rate 50] [--seconds 300] [--kills 0] [--pg]

A real `mss serve --only smtp,connectors` (SQLite in its data directory, or PostgreSQL
with --pg) with the demo's folder connector on dui@a.example; a lab of b.example (in the
space of trust) sends distinct HPRIM Net results over 4 SMTP connections at a fixed rate
(open loop: message n is due at n/rate, however slow the answers); a "DUI" thread takes
each file away as it appears (5 ms polling) and notes the time. Reported: messages,
acknowledged, files, lost (acknowledged, no file), duplicated (two files for one
message), 250 -> file latency p50/p90/p99/max, and the SMTP intake: the rate of
the 250s and how far behind schedule they came (which side is the bottleneck). With --kills N, `mss serve` gets
SIGKILL at N random moments of the load and is started again at once; failed
transactions are sent again (same Message-ID), and the latencies of messages
acknowledged in the 5 s before a kill are reported apart (they wait for the restart).
The load and the checks are tests/support/connector_load.py, which the integration test
tests/integration/test_connector_kill9.py runs with fewer messages.
Not a test: run by hand under `flock /tmp/mss-bench.lock`; results in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.connector_load import make_instance, percentile, run_load  # noqa: E402

PG_URL = os.environ.get("MSS_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the load")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILLs of mss serve during the load")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4, help="[connectors] workers (job threads)")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--drain", type=float, default=None,
                        help="seconds to wait after the load for the last files (default: max(120, --seconds))")
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    schema = None
    url = None
    if args.pg:
        sys.path.insert(0, str(ROOT / "tests"))
        from tests.conftest import _drop_schema, _pg_schema_url

        schema, url = _pg_schema_url()
    try:
        with tempfile.TemporaryDirectory(prefix="mss-connector-e2e-") as tmp:
            inst, folder = make_instance(Path(tmp) / "a.example", database_url=url, workers=args.workers)
            inst.start("smtp", "connectors")
            try:
                result = run_load(inst, folder, count=count, rate=args.rate, connections=args.connections,
                                  kills=args.kills,
                                  drain_timeout=args.drain if args.drain is not None else max(120.0, args.seconds))
            finally:
                inst.stop()
    finally:
        if schema:
            _drop_schema(schema)
    steady = result.latencies(exclude_kill_window=5.0 if args.kills else 0.0)
    everything = result.latencies()
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.python_version()}; "
          f"database {'PostgreSQL' if args.pg else 'SQLite'}")
    print(f"load: {count} messages at {args.rate:g}/s over {args.connections} connections, "
          f"{args.workers} connector job threads, "
          f"{args.kills} kill -9, {result.duration:.1f} s in all")
    print(f"acknowledged {len(result.acked)}/{count} (SMTP attempts {result.attempts}, failed {result.failures}); "
          f"files {sum(result.files.values())} for {len(result.files)} messages")
    print(f"lost (acknowledged, no file when the run ended) {len(result.lost)}, "
          f"duplicated {len(result.duplicated)}")
    if len(result.acked) > 1:
        first, last = min(result.acked.values()), max(result.acked.values())
        lags = result.intake_lags()
        print(f"SMTP intake: {(len(result.acked) - 1) / max(last - first, 1e-9):.1f} msg/s acknowledged "
              f"(first to last 250); 250 behind schedule p50 {percentile(lags, 50) * 1000:.0f} ms, "
              f"p99 {percentile(lags, 99) * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
    if result.seen:
        first, last = min(result.seen.values()), max(result.seen.values())
        if last > first:
            print(f"delivery rate: {(len(result.seen) - 1) / (last - first):.1f} files/s "
                  f"(first to last file seen)")
    for label, values in (("250 -> file", steady), ("all, with the restarts", everything)):
        if values:
            print(f"{label}: n={len(values)} p50 {percentile(values, 50) * 1000:.0f} ms, "
                  f"p90 {percentile(values, 90) * 1000:.0f} ms, p99 {percentile(values, 99) * 1000:.0f} ms, "
                  f"max {values[-1] * 1000:.0f} ms")
        if not args.kills:
            break
    return 0 if not result.lost and not result.duplicated and len(result.acked) == count else 1


if __name__ == "__main__":
    raise SystemExit(main())
