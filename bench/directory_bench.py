"""Directory benchmark: a synthetic national MSSanté extraction of N rows imported by the real
importer, then the same entries searched on `mss serve --only ldap` and on OpenLDAP slapd
(back-mdb) side by side, with the same client, in the same run.

    flock /tmp/mss-bench.lock .venv/bin/python bench/directory_bench.py --entries 1000000
    .venv/bin/python bench/directory_bench.py --entries 50000 --seconds 3       # a quick run

Steps: write the file (`directory.importers.synthetic.write_mssante_file`, one mailbox per row);
`mss directory import FILE --json` into a fresh data directory (wall time and the importer
process's peak RSS, from wait4); `mss directory export` gives the LDIF that `slapadd -q` loads
into a private slapd (schema from directory/schema.py, indexes below) started on a loopback port
in the work directory; `mss serve --only ldap` on another. Keys are drawn at random from the
entries. Then, for each search kind and concurrency, slapd then mss: C client processes, each
with one persistent anonymous connection, send SearchRequests encoded once per key beforehand
and read the raw socket up to SearchResultDone (no ASN.1 decoding), so the client costs little
and the ratio measures the servers. A sample of queries is checked with ldap3 first: both
servers must return the same entries and values.

Reports p50 / p95 latency, operations per second, the server's CPU per operation
(/proc/PID/stat) and mss/slapd ratios; `--json FILE` writes them. `--profile DIR` records the
mss server with py-spy during the concurrency-8 runs. Targets (issue 5): import >= 20,000
rows/s under 400 MB; exact p50 < 3 ms; prefix p50 < 20 ms; at concurrency 8 mss >= 25% of
slapd's ops/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from directory.importers.synthetic import write_mssante_file  # noqa: E402
from tests.support.instance import MSS, MssInstance  # noqa: E402
from tests.support.slapd import SLAPADD, Slapd  # noqa: E402

# What an address book asks for (the same list to both servers).
ATTRS = ["mail", "cn", "sn", "givenName", "rppsId", "o", "l"]
# slapd indexes: those of mss's columns that the searches use (directory/models.py), eq and sub.
SLAPD_INDEXES = ["objectClass eq", "mail eq", "rppsId eq", "nationalId eq", "sn eq,sub", "cn eq,sub",
                 "givenName eq,sub"]
KINDS = {"mail": ("exact (mail=...)", 0), "rpps": ("exact (rppsId=...)", 0),
         "prefix": ("prefix (sn=xxxx*), 20 max", 20)}


def popen_rss(args: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command, reaping it ourselves: (result, wall seconds, its peak RSS in MB from wait4)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    out_chunks, err_chunks = [], []

    def drain(stream, into):
        into.append(stream.read())

    threads = [threading.Thread(target=drain, args=(p.stdout, out_chunks)),
               threading.Thread(target=drain, args=(p.stderr, err_chunks))]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(p.pid, 0)
    for t in threads:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    return (subprocess.CompletedProcess(args, p.returncode, "".join(out_chunks), "".join(err_chunks)),
            wall, usage.ru_maxrss / 1024)


# --- slapd ------------------------------------------------------------------------------

class BenchSlapd(Slapd):
    """slapd as the benchmark runs it: the indexes a national directory would have, a 16 GB map."""

    def __init__(self, root: Path, suffix: str) -> None:
        super().__init__(root, suffix, indexes=SLAPD_INDEXES, maxsize=17179869184,
                         extra="loglevel 0\nsizelimit 1000\n")

    def load(self, ldif: Path) -> tuple[float, float]:
        """slapadd -q the LDIF, less its RFC 2849 `version: 1` line (which slapadd refuses)."""
        fd = os.open(ldif, os.O_RDONLY)
        try:
            head = os.read(fd, 64)
            skip = len(b"version: 1\n\n") if head.startswith(b"version: 1\n\n") else 0
            os.lseek(fd, skip, os.SEEK_SET)
            r, wall, rss = popen_rss([SLAPADD, "-q", "-f", str(self.conf)], stdin=fd)  # reads stdin
        finally:
            os.close(fd)
        if r.returncode != 0:
            raise SystemExit("slapadd failed:\n" + r.stderr[-3000:])
        return wall, rss


# --- the client -------------------------------------------------------------------------

def encode_search(base: str, flt: str, size: int, attrs: list[str]) -> bytes:
    """One LDAPMessage(SearchRequest) with message id 1 (one request in flight per connection,
    RFC 4511 section 4.1.1.1 lets an id be reused once its operation is done)."""
    from ldaptor import ldapfilter
    from ldaptor.protocols import pureldap

    req = pureldap.LDAPSearchRequest(baseObject=base, scope=pureldap.LDAP_SCOPE_wholeSubtree,
                                     derefAliases=0, sizeLimit=size, timeLimit=0, typesOnly=0,
                                     filter=ldapfilter.parseFilter(flt), attributes=attrs)
    return pureldap.LDAPMessage(req, id=1).toWire()


def _exchange(sock: socket.socket, req: bytes, buf: bytearray) -> tuple[int, int]:
    """Send one request; read whole LDAPMessages until SearchResultDone: (entries, resultCode)."""
    sock.sendall(req)
    entries = pos = 0
    while True:
        n = len(buf)
        while n - pos >= 2:
            first = buf[pos + 1]
            if first < 0x80:
                hdr, length = 2, first
            else:
                k = first & 0x7F
                if n - pos < 2 + k:
                    break
                hdr, length = 2 + k, int.from_bytes(buf[pos + 2:pos + 2 + k], "big")
            end = pos + hdr + length
            if end > n:
                break
            body = pos + hdr  # INTEGER messageID, then the protocolOp's tag
            op_at = body + 2 + buf[body + 1]
            op = buf[op_at]
            if op == 0x64:  # [APPLICATION 4] SearchResultEntry
                entries += 1
            elif op == 0x65:  # [APPLICATION 5] SearchResultDone: ENUMERATED resultCode first
                lb = buf[op_at + 1]
                at = op_at + 2 + (lb & 0x7F if lb & 0x80 else 0)
                code = buf[at + 2]
                del buf[:end]
                return entries, code
            pos = end
        chunk = sock.recv(1 << 18)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk


def _client(port: int, requests: list[bytes], start, seconds: float, max_ops: int, out) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    lat = array("d")
    errors = 0
    start.wait()
    t_start = time.perf_counter()
    stop = t_start + seconds
    i = 0
    nreq = len(requests)
    now = t_start
    while now < stop and i < max_ops:
        t = now
        entries, code = _exchange(sock, requests[i % nreq], buf)
        now = time.perf_counter()
        if entries == 0 or code not in (0, 4):
            errors += 1
        lat.append(now - t)
        i += 1
    sock.close()
    out.put((t_start, now, lat.tobytes(), errors))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cell(port: int, pid: int, requests: list[bytes], conc: int, seconds: float, max_ops: int) -> dict:
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    random.shuffle(requests)
    chunks = [requests[i::conc] for i in range(conc)]
    procs = [ctx.Process(target=_client, args=(port, c, start, seconds, max_ops // conc, out)) for c in chunks]
    for p in procs:
        p.start()
    time.sleep(0.3)  # connections up
    cpu0 = cpu_seconds(pid)
    start.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    cpu1 = cpu_seconds(pid)
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in array("d", r[2]))
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return {"ops": len(lat), "errors": sum(r[3] for r in results), "ops_s": len(lat) / wall,
            "p50_ms": statistics.median(lat) * 1000, "p95_ms": lat[int(len(lat) * 0.95)] * 1000,
            "cpu_us_per_op": (cpu1 - cpu0) / len(lat) * 1e6}


# --- keys and the equality check ----------------------------------------------------------

def draw_keys(database_url: str, count: int, prefix_len: int, seed: int) -> dict[str, list[str]]:
    from sqlalchemy import create_engine, text

    rng = random.Random(seed)
    engine = create_engine(database_url)
    with engine.connect() as c:
        top = c.execute(text("SELECT max(id) FROM dir_mailboxes")).scalar()
        ids = rng.sample(range(1, top + 1), min(top, count * 2))
        rows = []
        for i in range(0, len(ids), 500):
            rows += c.execute(text(
                "SELECT m.address, p.ident, p.family_lc FROM dir_mailboxes m "
                "LEFT JOIN dir_persons p ON p.id = m.person_id WHERE m.id IN ("
                + ",".join(str(x) for x in ids[i:i + 500]) + ")")).all()
    engine.dispose()
    rng.shuffle(rows)
    persons = [r for r in rows if r.ident]
    return {"mail": [r.address for r in rows[:count]],
            "rpps": [r.ident for r in persons[:count]],
            "prefix": [r.family_lc[:prefix_len] for r in persons[:count]]}


def filter_of(kind: str, key: str) -> str:
    from directory.filters import escape

    return {"mail": f"(mail={escape(key)})", "rpps": f"(rppsId={escape(key)})",
            "prefix": f"(sn={escape(key)}*)"}[kind]


def explain(database_url: str, keys: dict[str, list[str]]) -> None:
    """The query plan of each search kind as mss runs it (the columns the benchmark's attributes need)."""
    from sqlalchemy import create_engine

    from directory import store as dstore
    from directory.filters import parse
    from directory.server import attribute_plan

    engine = create_engine(database_url)
    dialect = engine.dialect.name
    fields, _, _ = attribute_plan(tuple(ATTRS), False)
    with engine.connect() as c:
        for kind, (label, size) in KINDS.items():
            sql, params = dstore.search_sql(parse(filter_of(kind, keys[kind][0])), dialect, fields=fields,
                                            limit=(size or 1000) + 1, ordered=False)
            head = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
            plan = [r[-1] for r in c.exec_driver_sql(head + sql, tuple(params))]
            print(f"plan of {label}:\n    " + "\n    ".join(plan), flush=True)
    engine.dispose()


def ldap3_search(port: int, base: str, flt: str, size: int) -> tuple[int, dict[str, dict]]:
    import ldap3

    conn = ldap3.Connection(ldap3.Server("127.0.0.1", port=port, get_info=ldap3.NONE), auto_bind=True)
    conn.search(base, flt, attributes=ATTRS, size_limit=size)
    out = {}
    for e in conn.response:
        if e.get("type") == "searchResEntry":
            out[e["dn"].lower()] = {k.lower(): sorted(v) for k, v in e["raw_attributes"].items()}
    code = conn.result["result"]
    conn.unbind()
    return code, out


def check_same(mss_port: int, slapd_port: int, base: str, keys: dict[str, list[str]], sample: int) -> int:
    """Both servers give the same entries and values; with a size limit and more matches than
    that, each returns the limit of entries matching the prefix (RFC 4511 leaves which to the
    server). Returns the number of queries checked."""
    n = 0
    for kind, (_, size) in KINDS.items():
        for key in keys[kind][:sample]:
            flt = filter_of(kind, key)
            (mc, mine), (sc, theirs) = ldap3_search(mss_port, base, flt, size), ldap3_search(slapd_port, base, flt,
                                                                                               size)
            if not theirs or mc != sc:
                raise SystemExit(f"{flt}: mss result {mc} ({len(mine)} entries), slapd {sc} ({len(theirs)})")
            if sc == 4:
                bad = [dn for dn, a in mine.items()
                       if not any(v.decode().lower().startswith(key) for v in a.get("sn", []))]
                if len(mine) != len(theirs) or bad:
                    raise SystemExit(f"{flt}: size-limited results differ ({len(mine)} vs {len(theirs)}, {bad[:3]})")
            elif mine != theirs:
                diff = {dn: (mine.get(dn), theirs.get(dn)) for dn in set(mine) | set(theirs)
                        if mine.get(dn) != theirs.get(dn)}
                raise SystemExit(f"{flt}: mss and slapd differ: {list(diff.items())[:2]}")
            n += 1
    return n


# --- main ---------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000, help="rows of the MSSanté file (= entries)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each measured run")
    ap.add_argument("--max-ops", type=int, default=400_000, help="bound on the requests of one run")
    ap.add_argument("--keys", type=int, default=5000, help="random keys per search kind")
    ap.add_argument("--prefix-len", type=int, default=4)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--check", type=int, default=30, help="queries per kind compared with ldap3")
    ap.add_argument("--db", help="PostgreSQL URL for mss (default: SQLite in the data directory)")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed at the end)")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--profile", help="py-spy record the mss server during the concurrency-8 runs, into DIR")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    random.seed(args.seed)
    concs = [int(c) for c in args.concurrency.split(",")]

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="mss-dirbench-"))
    work.mkdir(parents=True, exist_ok=True)
    schema = None
    db_url = args.db
    if db_url:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
        db_url += ("&" if "?" in db_url else "?") + f"options=-csearch_path%3D{schema}"
    result: dict = {"entries": args.entries, "engine": "postgresql" if db_url else "sqlite",
                    "load_average_start": os.getloadavg()}
    slapd = inst = None
    try:
        t = time.perf_counter()
        path = write_mssante_file(work / "Extraction_Correspondance_MSSante_bench.txt", args.entries)
        print(f"generated {args.entries} rows ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t:.1f} s", flush=True)

        inst = MssInstance(work / "mss", "bench.example", demo=False, database_url=db_url)
        from mssmail.config import load_config

        config = load_config(inst.data, inst.config_path)
        base = config.directory.base_dn
        r, wall, rss = popen_rss([*MSS, "--data", str(inst.data), "directory", "import", str(path), "--json"],
                                 env=inst.env)
        if r.returncode != 0:
            raise SystemExit("import failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
        report = json.loads(r.stdout)
        result["import"] = {"rows": report["read"], "rejected": report["rejected"], "seconds": report["seconds"],
                            "rows_s": report["read"] / report["seconds"], "wall_s": wall, "peak_rss_mb": rss,
                            "tables": report["tables"]}
        print(f"import: {report['read']} rows in {report['seconds']:.1f} s "
              f"({report['read'] / report['seconds']:,.0f} rows/s; process {wall:.1f} s), peak RSS {rss:.0f} MB, "
              f"rejected {report['rejected']}; {json.dumps(report['tables'])}", flush=True)

        ldif = work / "entries.ldif"
        r, wall, _ = popen_rss([*MSS, "--data", str(inst.data), "directory", "export", "--output", str(ldif)],
                               env=inst.env)
        if r.returncode != 0:
            raise SystemExit("export failed:\n" + r.stderr[-2000:])
        print(f"export: {ldif.stat().st_size / 1e6:.0f} MB of LDIF in {wall:.1f} s", flush=True)
        slapd = BenchSlapd(work / "slapd", base)
        wall, rss = slapd.load(ldif)
        result["slapadd"] = {"seconds": wall, "peak_rss_mb": rss}
        print(f"slapadd -q: {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)
        slapd.start()
        inst.start("ldap")
        mss_port, mss_pid = inst.ports["ldap"], inst.process.pid

        keys = draw_keys(db_url or config.database_url, args.keys, args.prefix_len, args.seed)
        explain(db_url or config.database_url, keys)
        checked = check_same(mss_port, slapd.port, base, keys, args.check)
        print(f"checked {checked} queries: mss and slapd return the same entries", flush=True)

        servers = {"slapd": (slapd.port, slapd.proc.pid), "mss": (mss_port, mss_pid)}
        requests = {k: [encode_search(base, filter_of(k, key), KINDS[k][1], ATTRS) for key in keys[k]]
                    for k in KINDS}
        for port, pid in servers.values():  # warm-up: every key once, page caches filled
            for k in KINDS:
                run_cell(port, pid, list(requests[k]), 2, args.seconds, len(requests[k]))
        cells = []
        print("\n| search | conc. | server | p50 ms | p95 ms | ops/s | server CPU µs/op | errors |\n"
              "|---|---|---|---|---|---|---|---|", flush=True)
        for k, (label, _) in KINDS.items():
            for conc in concs:
                pair = {}
                for name, (port, pid) in servers.items():
                    spy = None
                    if args.profile and name == "mss" and conc >= 8:
                        Path(args.profile).mkdir(parents=True, exist_ok=True)
                        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                        spy = subprocess.Popen([pyspy, "record", "-p", str(pid), "-r", "200", "-f", "raw",
                                                "-o", f"{args.profile}/mss-{k}-c{conc}.txt",
                                                "-d", str(int(args.seconds) + 2)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(1)
                    cell = run_cell(port, pid, list(requests[k]), conc, args.seconds, args.max_ops)
                    if spy:
                        spy.wait()
                    cell.update(search=k, concurrency=conc, server=name)
                    cells.append(cell)
                    pair[name] = cell
                    print(f"| {label} | {conc} | {name} | {cell['p50_ms']:.2f} | {cell['p95_ms']:.2f} | "
                          f"{cell['ops_s']:,.0f} | {cell['cpu_us_per_op']:.0f} | {cell['errors']} |", flush=True)
                pair["mss"]["ratio"] = pair["mss"]["ops_s"] / pair["slapd"]["ops_s"]
                print(f"|  |  | mss/slapd |  |  | {pair['mss']['ratio']:.0%} |  |  |", flush=True)
        result["cells"] = cells
        result["load_average_end"] = os.getloadavg()
        mss_cells = {(c["search"], c["concurrency"]): c for c in cells if c["server"] == "mss"}
        imp = result["import"]
        targets = {
            "import >= 20000 rows/s": imp["rows_s"] >= 20000,
            "import peak RSS < 400 MB": imp["peak_rss_mb"] < 400,
            "exact p50 < 3 ms": all(c["p50_ms"] < 3 for (k, _), c in mss_cells.items() if k != "prefix"),
            "prefix p50 < 20 ms": all(c["p50_ms"] < 20 for (k, _), c in mss_cells.items() if k == "prefix"),
            "c=8 ops/s >= 25% of slapd": all(c["ratio"] >= 0.25 for (_, n), c in mss_cells.items() if n == 8),
        }
        result["targets"] = targets
        print("\n" + "\n".join(f"{'met   ' if ok else 'MISSED'} {t}" for t, ok in targets.items()))
        print(f"load average: start {result['load_average_start']}, end {result['load_average_end']}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    finally:
        if inst is not None:
            inst.stop()
        if slapd is not None:
            slapd.stop()
        if schema:
            import psycopg

            with psycopg.connect(args.db.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
                c.execute(f'DROP SCHEMA "{schema}" CASCADE')
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
