"""imaptest's stress mode against mss and against Dovecot, one after the other, same
machine, same imaptest binary, same mailbox file: logins and commands done, errors
imaptest reported, and the mss server's memory before, right after and a while after.

    python bench/imap_stress.py [--secs 30] [--clients 10] [--json]

imaptest (built by tests/data/imaptest/build.sh, cached) logs `--clients` connections in
and out in a loop for `--secs` seconds, each running a random mix of SELECT, FETCH,
STORE, EXPUNGE, APPEND... with state tracking: it checks every response against what
it knows of the mailbox and prints an `Error:` line for each protocol violation. mss
runs from this tree (`mss serve --only imap`, SQLite, its demo user); Dovecot is Debian's
2.3 (`dovecot-imapd`), a private instance on loopback ports with a temporary config
(Maildir, users from a passwd-file with a SHA512-CRYPT password), started and stopped here
(it needs the `dovecot` and `dovenull` users the package creates). Runs hold
/tmp/mss-bench.lock so two benchmarks never overlap. The ratio printed is mss logins /
Dovecot logins.

    --only mss             skip Dovecot (while working on mss)
    --profile FILE.svg     py-spy flame graph of the mss process during the run (FILE.txt:
                           collapsed stacks, one line per stack and its sample count)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.instance import MssInstance, free_port  # noqa: E402

BUILD = ROOT / "tests" / "data" / "imaptest" / "build.sh"
USER = "jean.martin@a.example"
COMMANDS = ("Logi", "List", "Stat", "Sele", "Fetc", "Fet2", "Stor", "Dele", "Expu", "Appe", "Logo")


def build_imaptest() -> Path:
    result = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident KiB of a process (VmRSS; RssAnon: heap only, RssFile: mapped files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_stress(binary: Path, port: int, user: str, password: str, secs: int, clients: int) -> dict:
    mbox = binary.parent / "tests" / "default.mbox"
    args = [str(binary), "host=127.0.0.1", f"port={port}", "ssl=any-cert", f"user={user}",
            f"pass={password}", f"mbox={mbox}", f"secs={secs}", f"clients={clients}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=secs + 120)
    text = result.stdout + result.stderr
    totals: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Totals:"):
            header = lines[i + 1].split()
            counts = next(ln.split() for ln in lines[i + 2:] if re.fullmatch(r"[\d\s]+", ln) and ln.strip())
            totals = {name: int(value) for name, value in zip(header, counts, strict=False)}
            break
    errors = [ln for ln in lines if ln.startswith("Error:")]
    kinds: dict[str, int] = {}
    for line in errors:
        kind = re.sub(r"^Error: \S+ ?", "", line).split(":")[0][:60]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"totals": totals, "errors": len(errors), "error_kinds": kinds}


def dovecot_config(base: Path, port: int, scheme: str = "SHA512-CRYPT") -> Path:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(base / "key.pem"),
                    "-out", str(base / "cert.pem")], check=True, capture_output=True)
    mail = base / "mail"
    mail.mkdir()
    shutil.chown(mail, "nobody", "nogroup")
    base.chmod(0o755)
    # The same kind of credential check mss does: a salted hash per user from a file, not a
    # static password (Dovecot's default scheme; mss uses Argon2id, docs/security.md).
    hashed = "pass" if scheme == "PLAIN" else subprocess.run(
        ["openssl", "passwd", "-6", "pass"], check=True, capture_output=True, text=True).stdout.strip()
    (base / "passwd").write_text(f"tester:{{{scheme}}}{hashed}::::::\n")
    conf = base / "dovecot.conf"
    conf.write_text(f"""base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{mail}/%u
auth_mechanisms = plain login
disable_plaintext_auth = no
passdb {{
  driver = passwd-file
  args = scheme={scheme} {base}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
""")
    return conf


def run_mss(binary: Path, tmp: Path, opts: argparse.Namespace) -> dict:
    inst = MssInstance(tmp / "mss", "a.example")
    inst.configure("imap", "poll_interval", "1")
    inst.start("imap")
    spy = None
    try:
        assert inst.process is not None
        pid = inst.process.pid
        before = rss_kib(pid)
        if opts.profile:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid),
                                    "-d", str(opts.secs), "-o", str(opts.profile), "-r", "50", "--nonblocking",
                                    "-f", "flamegraph" if opts.profile.suffix == ".svg" else "raw"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = run_stress(binary, inst.ports["imaps"], USER, inst.passwords[USER], opts.secs, opts.clients)
        after = rss_kib(pid)
        for _ in range(opts.rounds - 1):
            result.setdefault("rss_kib_rounds", [after])
            again = run_stress(binary, inst.ports["imaps"], USER, inst.passwords[USER], opts.secs, opts.clients)
            result["errors"] += again["errors"]
            after = rss_kib(pid)
            result["rss_kib_rounds"].append(after)
            result.setdefault("anon_kib_rounds", []).append(rss_kib(pid, "RssAnon"))
        time.sleep(10)
        result["rss_kib"] = {"start": before, "end": after, "10s_later": rss_kib(pid)}
        if spy is not None:
            spy.wait(timeout=120)
        return result
    finally:
        inst.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secs", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=("mss", "dovecot"))
    parser.add_argument("--rounds", type=int, default=1,
                        help="stress runs in a row against the same mss (RSS after each: growth or plateau)")
    parser.add_argument("--dovecot-scheme", choices=("SHA512-CRYPT", "PLAIN"), default="SHA512-CRYPT",
                        help="how the passwd-file holds Dovecot's password (PLAIN: no hash at all)")
    parser.add_argument("--profile", type=Path, help="py-spy flame graph (SVG) of mss")
    opts = parser.parse_args()
    binary = build_imaptest()
    load = Path("/proc/loadavg").read_text().split()[0]  # the machine is shared: say how busy
    results: dict[str, dict] = {}
    with open("/tmp/mss-bench.lock", "w") as lock, tempfile.TemporaryDirectory() as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if opts.only != "dovecot":
            results["mss"] = run_mss(binary, Path(tmp), opts)
        if opts.only == "mss":
            print(json.dumps(results, indent=2) if opts.json else results)
            return
        Path(tmp).chmod(0o755)  # Dovecot's mail processes run as nobody
        base = Path(tmp) / "dovecot"
        base.mkdir()
        port = free_port()
        conf = dovecot_config(base, port, opts.dovecot_scheme)
        subprocess.run(["/usr/sbin/dovecot", "-c", str(conf)], check=True)
        if opts.only == "dovecot":
            try:
                time.sleep(1)
                print(run_stress(binary, port, "tester", "pass", opts.secs, opts.clients))
            finally:
                subprocess.run(["/usr/sbin/dovecot", "-c", str(conf), "stop"], check=False)
            return
        try:
            time.sleep(1)
            results["dovecot"] = run_stress(binary, port, "tester", "pass", opts.secs, opts.clients)
        finally:
            subprocess.run(["/usr/sbin/dovecot", "-c", str(conf), "stop"], check=False)
    mss_logins = results["mss"]["totals"].get("Logi", 0)
    dc_logins = results["dovecot"]["totals"].get("Logi", 0)
    results["ratio_logins"] = round(mss_logins / dc_logins, 3) if dc_logins else None
    results["settings"] = {"secs": opts.secs, "clients": opts.clients, "dovecot_scheme": opts.dovecot_scheme,
                           "load_average": load}
    if opts.json:
        print(json.dumps(results, indent=2))
        return
    print(f"imaptest stress, {opts.clients} clients, {opts.secs} s each (mss first, then Dovecot with "
          f"{opts.dovecot_scheme} passwords; load average {load} at the start)")
    print(f"{'':8}" + "".join(f"{c:>7}" for c in COMMANDS) + f"{'errors':>8}")
    for name in ("mss", "dovecot"):
        row = results[name]
        print(f"{name:8}" + "".join(f"{row['totals'].get(c, 0):>7}" for c in COMMANDS) + f"{row['errors']:>8}")
    rss = results["mss"]["rss_kib"]
    print(f"logins mss/Dovecot: {results['ratio_logins']}")
    print(f"mss RSS: {rss['start'] // 1024} MiB at start, {rss['end'] // 1024} MiB at the end, "
          f"{rss['10s_later'] // 1024} MiB 10 s later")
    for name in ("mss", "dovecot"):
        if results[name]["error_kinds"]:
            print(f"{name} errors: {results[name]['error_kinds']}")


if __name__ == "__main__":
    main()
