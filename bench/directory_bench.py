"""Directory search benchmark (partial): N synthetic entries bulk-loaded into a fresh instance,
then LDAP searches with ldap3 against `mss serve --only ldap` at concurrency 1 and 8.

Not yet here (see docs/performance.md ## Directory): the 1M-row national-file generator and
import timing, and the side-by-side slapd run.

    .venv/bin/python bench/directory_bench.py --entries 100000 --queries 500
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from directory.identifiers import luhn_digit
from directory.models import DirMailbox, DirPerson

FAMILIES = ["martin", "bernard", "dubois", "thomas", "robert", "richard", "petit", "durand", "leroy", "moreau"]


def load(store, n: int) -> float:
    t0 = time.perf_counter()
    batch = 20000
    for start in range(0, n, batch):
        persons, boxes = [], []
        for i in range(start, min(n, start + batch)):
            body = f"1{i:09d}"
            rpps = body + luhn_digit(body)
            fam = f"{FAMILIES[i % 10]}{i // 10}"
            persons.append({"id": i + 1, "id_type": "RPPS", "ident": rpps, "national_id": "8" + rpps,
                            "family_name": fam.title(), "family_lc": fam, "given_name": "Jean",
                            "given_lc": "jean", "profession_code": "10", "source": "bench"})
            addr = f"user{i}@bench.example"
            boxes.append({"address": addr, "address_lc": addr, "bal_type": "PER", "person_id": i + 1,
                          "display_name": fam, "display_lc": fam, "unlisted": False, "preferred_rank": 1,
                          "dematerialised": True, "source": "bench"})
        with store.db.write() as s:
            s.bulk_insert_mappings(DirPerson, persons)
            s.bulk_insert_mappings(DirMailbox, boxes)
    return time.perf_counter() - t0


def run_queries(port: int, filters: list[tuple[str, int]], concurrency: int) -> tuple[list[float], float]:
    import ldap3

    lat: list[float] = []
    lock = threading.Lock()
    chunks = [filters[i::concurrency] for i in range(concurrency)]

    def worker(chunk):
        conn = ldap3.Connection(ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE), auto_bind=True)
        mine = []
        for flt, size in chunk:
            t = time.perf_counter()
            conn.search("o=mss,c=fr", flt, attributes=["mail"], size_limit=size)
            assert conn.entries, flt
            mine.append(time.perf_counter() - t)
        conn.unbind()
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100000)
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    from mssmail.config import load_config
    from mssmail.store.service import Store
    from tests.support.instance import MssInstance

    with tempfile.TemporaryDirectory() as tmp:
        inst = MssInstance(Path(tmp) / "b", "bench.example", demo=False)
        config = load_config(inst.data, inst.config_path)
        with Store.from_config(config) as store:
            secs = load(store, args.entries)
        print(f"bulk load {args.entries} entries: {secs:.1f} s ({args.entries / secs:.0f}/s)")
        inst.start("ldap")
        try:
            n = args.entries
            kinds = {
                "exact mail": [(f"(mail=user{(i * 7919) % n}@bench.example)", 0) for i in range(args.queries)],
                "exact rpps": [(f"(rppsId=1{(i * 7919) % n:09d}{luhn_digit(f'1{(i * 7919) % n:09d}')})", 0)
                               for i in range(args.queries)],
                "prefix sn (20)": [(f"(sn={FAMILIES[i % 10]}{(i * 13) % max(1, n // 100)}*)", 20)
                                   for i in range(args.queries)],
            }
            for name, flts in kinds.items():
                for conc in (1, 8):
                    lat, wall = run_queries(inst.ports["ldap"], flts, conc)
                    lat.sort()
                    print(f"{name:<15} c={conc}: p50 {statistics.median(lat) * 1000:.2f} ms  "
                          f"p95 {lat[int(len(lat) * 0.95)] * 1000:.2f} ms  {len(lat) / wall:.0f} ops/s")
        finally:
            inst.stop()


if __name__ == "__main__":
    main()
