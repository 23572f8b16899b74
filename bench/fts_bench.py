#!/usr/bin/env python3
"""Full-text search on a large mailbox: mss without its index, mss with it, and Dovecot
(no FTS plugin), side by side on the same messages, in one run.

    flock /tmp/mss-bench.lock .venv/bin/python bench/fts_bench.py [--size 100000] [--repeat 5] \\
        [--db sqlite|postgresql] [--keep DIR [--no-scan] | --reuse DIR]

`--keep DIR` builds the corpus into DIR (the mss data directory, and on PostgreSQL the
schema, named in DIR/bench.json) and leaves it there; `--reuse DIR` then skips the
generation, the loading, the scan and the indexing (several minutes at 100,000) and
times only the indexed searches on what DIR holds (no Dovecot): for iterating on the
search code. A reused corpus was indexed by the code of its `--keep` run (run `mss
index rebuild` and `--keep` again after a change to what is indexed).

The mailbox is `bench/imap_bench.py`'s generator (a few KB each: plain text, 8-bit UTF-8,
multipart/alternative with HTML, one in eight with a base64 attachment of random bytes;
"hyperkaliemie" in about 1% of the bodies, "Zorglub" in about 1% of the subjects). Steps:

1. load it into an `mss` data directory through the store API (batches of 1,000) and
   into a private Dovecot (Maildir written directly, as imap_bench does);
2. start `mss serve --only imap` (no indexer) and time the searches over IMAPS: every
   message is pending, so this is the scan, as before the index;
3. index everything in this process (`Store.fts_index_all`, the indexer's own code path):
   messages per second, and the index's size on disk against the text it indexes (the
   decoded text of the headers and text parts) and the raw messages;
4. time the same searches again (index in use), then Dovecot's, with the same client;
   and the webmail's word search (`Store.search_text`, in process) for a patient's name.

Each search runs `--repeat` times after one untimed warm-up (the scan: `--scan-repeat`
times, no warm-up); the median (p50) is reported
and the hit counts must agree between the three. Prints a table and writes JSON to
bench/results/. Not a test: run by hand, results go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from imap_bench import USER, Dovecot, bench_box, check, connect, generate  # noqa: E402

from tests.support.instance import MssInstance  # noqa: E402

DOMAIN = USER.split("@")[1]
SEARCHES = [
    ("UID SEARCH TEXT hyperkaliemie (rare word)", ("TEXT", "hyperkaliemie")),
    ("UID SEARCH TEXT patient (common word)", ("TEXT", "patient")),
    ("UID SEARCH BODY perkali (part of a word)", ("BODY", "perkali")),
    ("UID SEARCH SUBJECT Zorglub", ("SUBJECT", "Zorglub")),
    ("UID SEARCH FROM dupont", ("FROM", "dupont")),
]
# A patient's name, a result, a prefix; then a short word (one or two characters are
# matched whole) and a three-letter prefix of a common word (the most hits).
WEB_WORDS = ["Lefèvre", "hyperkaliémie", "zorg", "a", "pat"]


def timed_runs(fn, repeat: int, warm: bool = True) -> tuple[float, list[float], object]:
    if warm:
        fn()  # warm-up, untimed
    runs, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        runs.append(round((time.perf_counter() - start) * 1000, 2))
    return statistics.median(runs), runs, out


def imap_searches(port: int, ca: Path, repeat: int, warm: bool = True) -> dict:
    client = connect(port, ca)
    try:
        check(client.select("INBOX"))
        results = {}
        for label, criteria in SEARCHES:
            ms, runs, data = timed_runs(lambda c=criteria: check(client.uid("SEARCH", None, *c)), repeat, warm)
            results[label] = {"ms": round(ms, 2), "runs": runs, "hits": len(data[0].split())}  # type: ignore[index]
        client.logout()
        return results
    finally:
        with contextlib.suppress(Exception):  # already logged out
            client.shutdown()


def index_size(store) -> dict:
    from sqlalchemy import text

    with store.db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            size = connection.execute(text(
                "SELECT pg_total_relation_size('fts_docs') + pg_total_relation_size('fts_terms')")).scalar_one()
            return {"bytes": int(size), "how": "pg_total_relation_size(fts_docs, its GIN index, fts_terms)"}
        pages = connection.execute(text("PRAGMA page_size")).scalar_one()
        try:
            size = connection.execute(text(
                "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'fts_%' OR name LIKE 'sqlite_autoindex_fts_%'"
            )).scalar_one()
            return {"bytes": int(size or 0), "how": "dbstat: fts_docs, fts_index (FTS5 shadow tables), fts_terms"}
        except Exception:  # SQLite built without dbstat
            return {"bytes": None, "how": f"dbstat unavailable (page size {pages})"}


def text_size(messages: list) -> int:
    """Octets of the text the index reads: decoded headers and text parts (UTF-8)."""
    from mssmail.store import mimeview
    from mssmail.store import query as q

    return sum(len(t.encode("utf-8")) for raw, _when, _flags in messages
               for t in q._texts(mimeview.parse_tree(raw), True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scan-repeat", type=int, default=1, help="repeats of the (slow) scan searches")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--no-scan", action="store_true",
                        help="skip the searches without the index (with --keep: a corpus to --reuse, sooner)")
    parser.add_argument("--keep", type=Path, help="build the corpus into this directory and keep it")
    parser.add_argument("--reuse", type=Path, help="time the indexed searches on a corpus kept by --keep")
    args = parser.parse_args()
    if args.reuse is not None:
        reuse(args)
        return
    use_dovecot = not args.no_dovecot and shutil.which("dovecot") is not None
    report: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "size": args.size,
                    "db": args.db, "repeat": args.repeat,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version(), "load_average": os.getloadavg(),
                                "shared": "yes: other agents ran builds and tests on the same 2 cores"}}
    if use_dovecot:
        report["dovecot"] = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="fts-bench-"))
    os.chmod(work, 0o755)
    inst = dove = None
    schema = None
    try:
        messages = generate(args.size)
        raw_bytes = sum(len(m[0]) for m in messages)
        print(f"{args.size} messages generated, {raw_bytes / 1e6:.1f} MB", flush=True)
        from mssmail.config import load_config
        from mssmail.store.service import Store

        inst, schema = bench_box(work, args.db)
        store = Store.from_config(load_config(inst.data))
        started = time.monotonic()
        for start in range(0, len(messages), 1000):
            batch = [(raw, flags, when) for raw, when, flags in messages[start:start + 1000]]
            store.messages_append(USER, USER, "INBOX", batch)  # no FETCH cache: only SEARCH is timed
        report["mss_load_s"] = round(time.monotonic() - started, 1)
        print(f"mss: loaded in {report['mss_load_s']} s", flush=True)
        if use_dovecot:
            dove = Dovecot(work / "dovecot", inst.data / "pki" / "server.pem", inst.data / "pki" / "server.key")
            dove.load(messages)
            dove.start()
        report["text_bytes"] = text_size(messages)
        report["raw_bytes"] = raw_bytes
        if args.keep is not None:
            (work / "bench.json").write_text(json.dumps({
                "size": args.size, "db": args.db, "schema": schema, "database_url": os.environ["MSS_DATABASE_URL"] if schema else None,
                "text_bytes": report["text_bytes"], "raw_bytes": raw_bytes}))
        del messages
        ca = inst.ca_file

        inst.start("imap")
        if not args.no_scan:
            print("mss without its index (scan)...", flush=True)
            # The scan reads every message: its first run is its own warm-up (page cache).
            report["mss_scan"] = imap_searches(inst.ports["imaps"], ca, args.scan_repeat, warm=False)

        started = time.monotonic()
        indexed = store.fts_index_all(batch=500)
        seconds = time.monotonic() - started
        report["indexing"] = {"messages": indexed, "seconds": round(seconds, 1),
                              "messages_per_s": round(indexed / seconds, 1)}
        report["index_size"] = index_size(store)
        print(f"indexed {indexed} in {seconds:.1f} s ({indexed / seconds:.0f}/s); "
              f"index {report['index_size']}", flush=True)

        print("mss with its index...", flush=True)
        report["mss_index"] = imap_searches(inst.ports["imaps"], ca, args.repeat)
        if dove is not None:
            print("dovecot...", flush=True)
            report["dovecot_scan"] = imap_searches(dove.port, ca, args.repeat)
        report["webmail_search_text"] = web_searches(store, args.repeat)
        store.close()
    finally:
        if inst is not None:
            inst.stop()
        if dove is not None:
            dove.stop()
        if args.keep is None:
            if schema is not None:
                from tests.conftest import _drop_schema
                _drop_schema(schema)
            shutil.rmtree(work, ignore_errors=True)
    print_report(report, args)


def attach(data: Path, database_url: str | None) -> MssInstance:
    """An `MssInstance` over an existing data directory (no `mss init`), on new ports."""
    from tests.support.instance import PORT_KEYS, free_port, set_toml

    inst = MssInstance.__new__(MssInstance)
    inst.data, inst.domain, inst.process, inst.output, inst.passwords = data, DOMAIN, None, [], {}
    inst.env = {**os.environ, "PYTHONPATH": str(ROOT)}
    inst.env.pop("MSS_DATA", None)
    if database_url:
        inst.env["MSS_DATABASE_URL"] = database_url
    inst.config_path = data / "mss.toml"
    inst.ports = {key: free_port() for key in PORT_KEYS}
    for key, port in inst.ports.items():
        set_toml(inst.config_path, key, "port", str(port))
    return inst


def reuse(args: argparse.Namespace) -> None:
    """The indexed searches only, on a corpus kept by `--keep`."""
    work = args.reuse.resolve()
    kept = json.loads((work / "bench.json").read_text())
    args.size, args.db = kept["size"], kept["db"]
    if kept["database_url"]:
        os.environ["MSS_DATABASE_URL"] = kept["database_url"]
    from mssmail.config import load_config
    from mssmail.store.service import Store

    report: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "size": args.size,
                    "db": args.db, "repeat": args.repeat, "reused": str(work),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version(), "load_average": os.getloadavg()},
                    "text_bytes": kept["text_bytes"], "raw_bytes": kept["raw_bytes"]}
    inst = attach(work / "mss", kept["database_url"])
    store = Store.from_config(load_config(inst.data))
    try:
        status = store.fts_status()
        report["index_status"] = {"pending": status.pending, "indexed": status.indexed,
                                  "excluded": status.excluded}
        if status.pending:
            print(f"warning: {status.pending} messages pending (scanned)", flush=True)
        report["index_size"] = index_size(store)
        inst.start("imap")
        report["mss_index"] = imap_searches(inst.ports["imaps"], inst.ca_file, args.repeat)
        report["webmail_search_text"] = web_searches(store, args.repeat)
    finally:
        inst.stop()
        store.close()
    report["machine"]["load_average_end"] = os.getloadavg()
    print_report(report, args)


def web_searches(store, repeat: int) -> dict:
    web = {}
    for words in WEB_WORDS:
        ms, runs, hits = timed_runs(lambda w=words: store.search_text(USER, USER, w, limit=50), repeat)
        web[words] = {"ms": round(ms, 2), "runs": runs, "hits_shown": len(hits)}  # type: ignore[arg-type]
    return web


def print_report(report: dict, args: argparse.Namespace) -> None:
    print(f"\n## {args.size:,} messages, {args.db}\n")
    print("| search | mss, scan (ms) | mss, index (ms) | Dovecot (ms) | hits |")
    print("|---|---:|---:|---:|---|")
    for label, _criteria in SEARCHES:
        scan, index = report.get("mss_scan", {}).get(label, {"ms": float("nan"), "hits": "-"}), report["mss_index"][label]
        dove_row = report.get("dovecot_scan", {}).get(label, {})
        hits = f"{scan['hits']} / {index['hits']} / {dove_row.get('hits', '-')}"
        print(f"| {label} | {scan['ms']:.1f} | {index['ms']:.1f} | {dove_row.get('ms', float('nan')):.1f} | {hits} |")
    for words, row in report["webmail_search_text"].items():
        print(f"| webmail search_text {words!r} | - | {row['ms']:.1f} | - | {row['hits_shown']} shown |")
    size = report["index_size"]["bytes"]
    rate = report.get("indexing", {}).get("messages_per_s", "-")
    print(f"\nindexing: {rate} messages/s; index {size} bytes "
          f"= {size / report['text_bytes']:.2f} x the text indexed ({report['text_bytes']} bytes), "
          f"{size / report['raw_bytes']:.2f} x the raw messages" if size else "")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"fts-{args.db}-{args.size}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
