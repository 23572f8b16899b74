"""Import benchmark: a synthetic national file of N rows, imported into a fresh store.

    .venv/bin/python bench/directory_import_bench.py --rows 200000
    .venv/bin/python bench/directory_import_bench.py --rows 1000000 --kind mssante
    .venv/bin/python bench/directory_import_bench.py --rows 1000000 --db postgresql+psycopg://root@127.0.0.1:5432/test

Reports the file size, the first import (rows/s), the re-import of the same file (idempotent,
nothing changes) and the peak RSS of the process (resource.getrusage). Targets (issue 5):
at least 20,000 rows/s, peak RSS under 400 MB. On PostgreSQL, tables are created in a fresh
schema that is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from directory.importers import import_file
from directory.importers.synthetic import write_activity_file, write_mssante_file
from mssmail.store.service import Store


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    ap.add_argument("--kind", choices=("activity", "mssante"), default="activity",
                    help="the 56-column activity file or the 31-column MSSanté mailbox file")
    ap.add_argument("--batch-size", type=int, help="lines per transaction (default: the importer's)")
    ap.add_argument("--dir", help="working directory (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="mss-dirbench-"))
    work.mkdir(parents=True, exist_ok=True)
    schema = None
    url = args.db or f"sqlite:///{work / 'mss.db'}"
    if url.startswith("postgresql"):
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
        url += ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"

    t = time.perf_counter()
    if args.kind == "mssante":
        path = write_mssante_file(work / "Extraction_MSSante_bench.txt", args.rows)
    else:
        path = write_activity_file(work / "PS_LibreAcces_Personne_activite_bench.txt", args.rows)
    gen_s = time.perf_counter() - t
    size_mb = path.stat().st_size / 1e6
    print(f"generated {args.rows} rows ({size_mb:.0f} MB) in {gen_s:.1f} s; peak RSS {peak_rss_mb():.0f} MB",
          flush=True)

    store = Store(url, work / "blobs", pool_size=2)
    store.migrate()
    try:
        opts = {"batch_size": args.batch_size} if args.batch_size else {}
        first = import_file(store, path, **opts)
        print(f"first import: {first.seconds:.1f} s, {args.rows / first.seconds:,.0f} rows/s, "
              f"peak RSS {peak_rss_mb():.0f} MB; {json.dumps(first.to_dict()['tables'])}", flush=True)
        again = import_file(store, path, **opts)
        print(f"re-import (unchanged): {again.seconds:.1f} s, {args.rows / again.seconds:,.0f} rows/s, "
              f"added {again.added} updated {again.updated} removed {again.removed}; "
              f"peak RSS {peak_rss_mb():.0f} MB", flush=True)
    finally:
        store.close()
        if schema:
            import psycopg

            with psycopg.connect(args.db.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
                c.execute(f'DROP SCHEMA "{schema}" CASCADE')
    result = {"kind": args.kind, "rows": args.rows, "engine": url.split(":")[0], "file_mb": round(size_mb),
              "import_s": round(first.seconds, 1), "import_rows_per_s": round(args.rows / first.seconds),
              "reimport_s": round(again.seconds, 1), "reimport_rows_per_s": round(args.rows / again.seconds),
              "peak_rss_mb": round(peak_rss_mb())}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
