#!/usr/bin/env python3
"""IMAP on large mailboxes, side by side with Dovecot, on the same messages.

    .venv/bin/python bench/imap_bench.py [--sizes 10000,100000] [--repeat 3] [--db sqlite]

For each size, generates a mailbox of realistic messages (a few KB each: plain text,
8-bit UTF-8, multipart/alternative with HTML, one in eight with a PDF-like attachment;
varied senders and subjects), loads it into an `mss serve --only imap` instance (store
API, batches of 1,000 per transaction) and into a private Dovecot (`dovecot -F -c
<generated dovecot.conf>` on a free loopback port, Maildir written directly, passwd-file
auth, TLS with the mss instance's certificate). Both are reached over IMAPS with the
same imaplib client code; each server gets one untimed warm-up (SELECT and a header
FETCH, so Dovecot builds its index and cache) and then every operation runs `--repeat`
times (median reported):

    SELECT, FETCH 1:* (FLAGS ENVELOPE RFC822.SIZE), UID SEARCH HEADER SUBJECT x,
    UID SEARCH SUBJECT x, UID SEARCH TEXT x, UID FETCH 1:N BODY.PEEK[] (MB/s),
    STORE 1:* +FLAGS (\\Flagged) (undone untimed with -FLAGS.SILENT between runs).

The very first SELECT after loading is reported separately ("cold": Dovecot scans the
Maildir and writes its index then). Prints a table and writes JSON to bench/results/.
Not a test: run by hand, results go into docs/performance.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import imaplib
import json
import os
import platform
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.instance import MssInstance, free_port  # noqa: E402

DOMAIN = "bench.example"
USER = f"bench@{DOMAIN}"
PASSWORD = "Bench-password-2026"
BODY_FETCH = 2000  # messages fetched in full for the throughput figure
SEARCH_SUBJECT = "Zorglub"  # in the subject of about 1% of the messages
SEARCH_TEXT = "hyperkaliemie"  # in the body of about 1% of the messages

WORDS = ["patient", "tension", "glycemie", "traitement", "suivi", "analyse", "normal", "revoir", "consultation", "examen", "clinique", "antecedents", "allergie", "prescription", "posologie", "comprime", "matin", "soir", "douleur", "thoracique", "abdominale", "fievre", "toux", "dyspnee", "bilan", "biologique", "hemoglobine", "creatinine", "cholesterol", "echographie", "radiographie", "scanner", "IRM", "resultat", "conclusion", "medecin", "traitant", "infirmier", "kinesitherapeute", "hospitalisation", "sortie", "retour", "domicile", "rendez-vous", "controle", "semaine", "mois", "vaccination", "dossier", "courrier", "avis", "specialiste", "cardiologie", "pneumologie", "neurologie", "pediatrie", "geriatrie", "EHPAD", "laboratoire"]
UTF8_WORDS = ["élévation", "réévaluation", "fébrile", "cœur", "préconisé", "à", "réévaluer", "très", "légère"]
SUBJECTS = ["Compte rendu de consultation", "Résultats de biologie", "Lettre de liaison",
            "Demande d'avis", "Ordonnance", "Bilan sanguin", "Rendez-vous de contrôle",
            "Re: dossier patient", "Fwd: compte rendu opératoire", "Sortie d'hospitalisation",
            "Résultats HPRIM", "Question posologie", "Transmission EHPAD"]
FIRST = ["Jean", "Claire", "Élodie", "Omar", "Sophie", "Luc", "Nadia", "Pierre", "Anne",
         "Karim", "Julie", "Marc", "Inès", "Paul", "Léa", "Hugo", "Chloé", "Yann"]
LAST = ["Martin", "Durand", "Petit", "Haddad", "Bernard", "Moreau", "Laurent", "Simon",
        "Michel", "Lefèvre", "Garcia", "Roux", "Fournier", "Girard", "Bonnet", "Dupont"]
DOMAINS = ["chu-nord.example", "labo-bio.example", "ehpad-les-tilleuls.example",
           "cabinet-dupont.example", "clinique-sud.example", "mss.example"]


# ---------------------------------------------------------------- messages

def _ascii(text: str) -> str:
    return text.encode("ascii", "ignore").decode().lower().replace(" ", ".")


def _paragraphs(rng: random.Random, utf8: bool, needle: bool) -> str:
    words = WORDS + (UTF8_WORDS if utf8 else [])
    paras = []
    for _ in range(rng.randint(1, 8)):
        line_words = rng.choices(words, k=rng.randint(20, 90))
        paras.append(_wrap(" ".join(line_words).capitalize() + "."))
    if needle:
        paras.insert(rng.randrange(len(paras) + 1), f"Attention: {SEARCH_TEXT} a controler.")
    return "\r\n\r\n".join(paras) + "\r\n"


def _wrap(text: str, width: int = 76) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n".join(lines)


def make_message(i: int, rng: random.Random) -> tuple[bytes, datetime, list[str]]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    sender = f"{first} {last}"
    sender_addr = f"{_ascii(first)}.{_ascii(last)}@{rng.choice(DOMAINS)}"
    when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=900 * i + rng.randint(0, 899))
    subject = f"{rng.choice(SUBJECTS)} - {rng.choice(FIRST)} {rng.choice(LAST)} ({i})"
    if rng.random() < 0.01:
        subject = f"{SEARCH_SUBJECT}: {subject}"
    utf8 = rng.random() < 0.5
    needle = rng.random() < 0.01
    enc_subject = subject if subject.isascii() else (
        "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?=")
    enc_sender = sender if sender.isascii() else "=?utf-8?b?" + base64.b64encode(sender.encode()).decode() + "?="
    head = [f"Return-Path: <{sender_addr}>",
            f"Received: from mx.{sender_addr.split('@')[1]} (mx [192.0.2.{i % 250 + 1}])\r\n"
            f"\tby mss.{DOMAIN} with ESMTPS id {rng.getrandbits(48):012x}\r\n"
            f"\tfor <{USER}>; {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
            f"From: {enc_sender} <{sender_addr}>",
            f"To: Bench User <{USER}>"]
    if rng.random() < 0.3:
        head.append(f"Cc: {rng.choice(FIRST)} {rng.choice(LAST)} <secretariat@{rng.choice(DOMAINS)}>")
    head += [f"Subject: {enc_subject}",
             f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
             f"Message-ID: <{i}.{rng.getrandbits(64):016x}@{sender_addr.split('@')[1]}>",
             "MIME-Version: 1.0"]
    if rng.random() < 0.2:
        head.append(f"In-Reply-To: <{max(0, i - rng.randint(1, 50))}.0@mss.example>")
    text = _paragraphs(rng, utf8, needle)
    charset, cte = ("utf-8", "8bit") if utf8 else ("us-ascii", "7bit")
    kind = rng.random()
    if kind < 0.125:  # with an attachment
        boundary = f"=_mixed_{rng.getrandbits(64):016x}"
        blob = rng.randbytes(rng.randint(3000, 24000))
        b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n").decode()
        name = rng.choice(["compte-rendu", "resultats", "ordonnance", "dlu", "radio"])
        head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = (f"This is a multi-part message in MIME format.\r\n\r\n--{boundary}\r\n"
                f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
                f"{text}\r\n--{boundary}\r\nContent-Type: application/pdf; name=\"{name}-{i}.pdf\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment; filename=\"{name}-{i}.pdf\"\r\n\r\n{b64}--{boundary}--\r\n")
    elif kind < 0.35:  # multipart/alternative
        boundary = f"=_alt_{rng.getrandbits(64):016x}"
        html = "".join(f"<p>{p}</p>\r\n" for p in text.split("\r\n\r\n"))
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = (f"--{boundary}\r\nContent-Type: text/plain; charset={charset}\r\n"
                f"Content-Transfer-Encoding: {cte}\r\n\r\n{text}\r\n--{boundary}\r\n"
                f"Content-Type: text/html; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
                f"<html><body>\r\n{html}</body></html>\r\n--{boundary}--\r\n")
    else:
        head += [f"Content-Type: text/plain; charset={charset}; format=flowed",
                 f"Content-Transfer-Encoding: {cte}"]
        body = text
    raw = ("\r\n".join(head) + "\r\n\r\n" + body).encode()
    flags = []
    if rng.random() < 0.85:
        flags.append("\\Seen")
    if rng.random() < 0.05:
        flags.append("\\Answered")
    return raw, when, flags


def generate(count: int, seed: int = 2026) -> list[tuple[bytes, datetime, list[str]]]:
    rng = random.Random(seed)
    return [make_message(i, rng) for i in range(count)]


# ---------------------------------------------------------------- servers

def bench_box(work: Path, db: str) -> tuple[MssInstance, str | None]:
    """`mss init` in `work`/mss with the bench's mailbox (a 100 GB quota) and room for
    8 clients and more from one IP; on PostgreSQL in a new schema, returned for the
    caller to drop (`MSS_DATABASE_URL` names it, for a Store opened in this process)."""
    schema = db_url = None
    if db == "postgresql":
        from tests.conftest import _pg_schema_url
        schema, db_url = _pg_schema_url()
        os.environ["MSS_DATABASE_URL"] = db_url
    inst = MssInstance(work / "mss", DOMAIN, demo=False, database_url=db_url)
    inst.configure("limits", "max_connections_per_ip", "50")
    inst.mss("mailbox", "create", USER, "--quota", "100GB", "--password-stdin", input=PASSWORD + "\n")
    return inst, schema


def start_mss(work: Path, messages: list, db_url: str | None) -> tuple[MssInstance, float]:
    from mssmail.config import load_config
    from mssmail.imap.fetch import cache_entry
    from mssmail.store.service import Store

    inst = MssInstance(work / "mss", DOMAIN, demo=False, database_url=db_url)
    inst.configure("limits", "max_connections_per_ip", "50")
    inst.mss("mailbox", "create", USER, "--quota", "100GB", "--password-stdin", input=PASSWORD + "\n")
    started = time.monotonic()
    if db_url:
        os.environ["MSS_DATABASE_URL"] = db_url
    store = Store.from_config(load_config(inst.data))
    try:
        for start in range(0, len(messages), 1000):
            batch = [(raw, flags, when) for raw, when, flags in messages[start:start + 1000]]
            store.messages_append(USER, USER, "INBOX", batch, cache=cache_entry)
    finally:
        store.close()
    load_time = time.monotonic() - started
    inst.start("imap")
    return inst, load_time


DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
{ssl_dh}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{base}/home/%n/Maildir
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
{users}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%n
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


class Dovecot:
    def __init__(self, base: Path, cert: Path, key: Path) -> None:
        self.base = base
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        base.mkdir(parents=True)
        os.chmod(base, 0o755)
        if os.geteuid() == 0:
            import pwd
            nobody = pwd.getpwnam("nobody")
            self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
            users = ""
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
            import pwd
            name = pwd.getpwuid(self.uid).pw_name
            users = (f"default_login_user = {name}\ndefault_internal_user = {name}\n"
                     f"default_internal_group = {os.getgid()}\n")
        # Dovecot reads the key as root (or as us), copy both next to the config.
        shutil.copyfile(cert, base / "cert.pem")
        shutil.copyfile(key, base / "key.pem")
        os.chmod(base / "key.pem", 0o600)
        dh = Path("/usr/share/dovecot/dh.pem")
        (base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        os.chmod(base / "passwd", 0o644)
        self.conf = base / "dovecot.conf"
        self.conf.write_text(DOVECOT_CONF.format(
            base=base, cert=base / "cert.pem", key=base / "key.pem", port=self.port,
            uid=self.uid, gid=self.gid, users=users,
            ssl_dh=f"ssl_dh = <{dh}" if dh.exists() else ""))
        self.maildir = base / "home" / USER.split("@")[0] / "Maildir"

    def load(self, messages: list) -> float:
        started = time.monotonic()
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        letters = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F"}
        base_time = 1_700_000_000
        for i, (raw, when, flags) in enumerate(messages):
            info = "".join(sorted(letters[f] for f in flags))
            name = f"{base_time + i}.M{i}P1.bench,S={len(raw)},W={len(raw)}:2,{info}"
            path = self.maildir / "cur" / name
            with open(path, "wb") as fh:
                fh.write(raw)
            stamp = when.timestamp()
            os.utime(path, (stamp, stamp))
        for dirpath, _dirnames, filenames in os.walk(self.base / "home"):
            os.chown(dirpath, self.uid, self.gid)
            for f in filenames:
                os.chown(os.path.join(dirpath, f), self.uid, self.gid)
        return time.monotonic() - started

    def start(self) -> None:
        self.process = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        import socket
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("dovecot exited: " + self.process.stderr.read().decode()
                                   + self.log_tail())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start" + self.log_tail())

    def log_tail(self) -> str:
        log = self.base / "dovecot.log"
        return "\n" + log.read_text()[-3000:] if log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


# ---------------------------------------------------------------- client and operations

def connect(port: int, ca: Path) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(ca))
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=600)
    client._mode_utf8 = False
    typ, _ = client.login(USER, PASSWORD)
    assert typ == "OK"
    return client


def check(result: tuple) -> list:
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"{typ} {data}")
    return data


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000, out


def run_ops(client: imaplib.IMAP4_SSL, count: int, repeat: int) -> dict:
    """Every operation, `repeat` times; returns {op: {"ms": median, "runs": [...], ...}}."""
    results: dict[str, dict] = {}

    def record(op: str, fn: Callable[[], object], after: Callable[[], object] | None = None,
               summary: Callable[[object], dict] | None = None) -> None:
        runs, out = [], None
        for _ in range(repeat):
            ms, out = timed(fn)
            runs.append(round(ms, 2))
            if after is not None:
                after()
        results[op] = {"ms": round(statistics.median(runs), 2), "runs": runs,
                       **(summary(out) if summary else {})}

    def select() -> list:
        return check(client.select("INBOX"))

    record("SELECT", select, summary=lambda d: {"exists": int(d[0])})
    client.select("INBOX")
    record("FETCH 1:* (FLAGS ENVELOPE RFC822.SIZE)",
           lambda: check(client.fetch("1:*", "(FLAGS ENVELOPE RFC822.SIZE)")),
           summary=lambda d: {"responses": len(d)})
    hits = lambda d: {"hits": len(d[0].split())}  # noqa: E731
    record(f"UID SEARCH HEADER SUBJECT {SEARCH_SUBJECT}",
           lambda: check(client.uid("SEARCH", None, "HEADER", "SUBJECT", SEARCH_SUBJECT)), summary=hits)
    record(f"UID SEARCH SUBJECT {SEARCH_SUBJECT}",
           lambda: check(client.uid("SEARCH", None, "SUBJECT", SEARCH_SUBJECT)), summary=hits)
    record(f"UID SEARCH TEXT {SEARCH_TEXT}",
           lambda: check(client.uid("SEARCH", None, "TEXT", SEARCH_TEXT)), summary=hits)
    n = min(BODY_FETCH, count)
    uids = check(client.uid("SEARCH", None, "ALL"))[0].split()
    uid_range = f"{uids[0].decode()}:{uids[n - 1].decode()}"

    def bodies() -> list:
        return check(client.uid("FETCH", uid_range, "(BODY.PEEK[])"))

    def body_summary(d: object) -> dict:
        size = sum(len(item[1]) for item in d if isinstance(item, tuple))  # type: ignore[union-attr]
        return {"messages": n, "bytes": size}

    record(f"UID FETCH 1:{n} BODY.PEEK[]", bodies, summary=body_summary)
    results[f"UID FETCH 1:{n} BODY.PEEK[]"]["MB/s"] = round(
        results[f"UID FETCH 1:{n} BODY.PEEK[]"]["bytes"] / 1e6
        / (results[f"UID FETCH 1:{n} BODY.PEEK[]"]["ms"] / 1000), 2)
    record("STORE 1:* +FLAGS (\\Flagged)",
           lambda: check(client.store("1:*", "+FLAGS", "(\\Flagged)")),
           after=lambda: check(client.store("1:*", "-FLAGS.SILENT", "(\\Flagged)")),
           summary=lambda d: {"responses": len(d)})
    return results


def bench_server(name: str, port: int, ca: Path, count: int, repeat: int) -> dict:
    client = connect(port, ca)
    try:
        ms, data = timed(lambda: check(client.select("INBOX")))
        exists = int(data[0])  # type: ignore[index]
        assert exists == count, f"{name}: {exists} messages, expected {count}"
        cold = {"ms": round(ms, 2)}
        warm_ms, _ = timed(lambda: check(client.fetch("1:*", "(FLAGS ENVELOPE RFC822.SIZE)")))
        check(client.uid("SEARCH", None, "SUBJECT", "warmup"))
        results = {"SELECT (first after loading, cold)": cold,
                   "warm-up FETCH 1:* (FLAGS ENVELOPE RFC822.SIZE)": {"ms": round(warm_ms, 2)}}
        results.update(run_ops(client, count, repeat))
        client.logout()
        return results
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise


# ---------------------------------------------------------------- main

def print_table(size: int, mss: dict, dove: dict) -> list[dict]:
    rows = []
    print(f"\n## {size:,} messages\n")
    print("| op | mss ms | dovecot ms | ratio mss/dovecot | notes |")
    print("|---|---:|---:|---:|---|")
    for op in mss:
        a, b = mss[op]["ms"], dove[op]["ms"]
        notes = []
        for key in ("hits", "responses", "bytes"):
            if key in mss[op]:
                notes.append(f"{key} {mss[op][key]}/{dove[op].get(key)}")
        if "MB/s" in mss[op]:
            notes.insert(0, f"MB/s {mss[op]['MB/s']} / {dove[op]['MB/s']}")
        ratio = a / b if b else float("inf")
        rows.append({"op": op, "mss_ms": a, "dovecot_ms": b, "ratio": round(ratio, 2)})
        print(f"| {op} | {a:.1f} | {b:.1f} | {ratio:.2f} | {'; '.join(notes)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    if not shutil.which("dovecot"):
        sys.exit("dovecot not found (Debian package dovecot-imapd)")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    report = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(),
                          "load_average": os.getloadavg()},
              "db": args.db, "repeat": args.repeat, "sizes": {}}
    dovecot_version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
    report["dovecot"] = dovecot_version
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"imap-bench-{size}-"))
        os.chmod(work, 0o755)
        inst = dove = None
        schema = None
        try:
            t0 = time.monotonic()
            messages = generate(size)
            gen_s = time.monotonic() - t0
            total = sum(len(m[0]) for m in messages)
            print(f"{size} messages generated in {gen_s:.1f} s, {total / 1e6:.1f} MB "
                  f"(mean {total / size / 1000:.1f} KB)", flush=True)
            db_url = None
            if args.db == "postgresql":
                from tests.conftest import _pg_schema_url
                schema, db_url = _pg_schema_url()
            inst, mss_load = start_mss(work, messages, db_url)
            print(f"mss: loaded in {mss_load:.1f} s", flush=True)
            dove = Dovecot(work / "dovecot", inst.data / "pki" / "server.pem", inst.data / "pki" / "server.key")
            dove_load = dove.load(messages)
            dove.start()
            print(f"dovecot: Maildir written in {dove_load:.1f} s", flush=True)
            del messages
            ca = inst.ca_file
            mss_res = bench_server("mss", inst.ports["imaps"], ca, size, args.repeat)
            print("mss done", flush=True)
            dove_res = bench_server("dovecot", dove.port, ca, size, args.repeat)
            print("dovecot done", flush=True)
            rows = print_table(size, mss_res, dove_res)
            print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
            report["sizes"][str(size)] = {"bytes": total, "mean_bytes": total // size,
                                          "mss_load_s": round(mss_load, 1),
                                          "load_average_after": os.getloadavg(),
                                          "dovecot_load_s": round(dove_load, 1),
                                          "mss": mss_res, "dovecot": dove_res, "table": rows}
        finally:
            if inst is not None:
                inst.stop()
            if dove is not None:
                dove.stop()
            if schema:
                from tests.conftest import _drop_schema
                _drop_schema(schema)
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"kept {work}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"imap-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
