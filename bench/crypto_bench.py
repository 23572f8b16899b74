"""Benchmark: S/MIME sign, verify, encrypt, decrypt (mss crypto vs `openssl cms`).

Usage: .venv/bin/python bench/crypto_bench.py [--sizes 10K,1M,10M,50M] [--repeat 3]

Each operation runs in a fresh process so that its peak RSS (ru_maxrss from wait4) is its
own. "mss" time is the operation inside the process (interpreter start-up and imports
excluded, measured separately as "idle RSS"); "openssl" time is the whole `openssl cms`
process. Best of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNITS = {"K": 1024, "M": 1024**2}


def parse_size(text: str) -> int:
    return int(text[:-1]) * UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


def child(op: str, work: Path, size: str) -> None:
    """Run one operation of mss crypto and print its duration."""
    from crypto import smime
    from crypto.keystore import KeyStore

    ks = KeyStore(work / "pki")
    payload = work / f"payload-{size}"
    if op == "idle":
        print(0.0)
        return
    # Credentials are unlocked before timing: the server keeps them unlocked in memory.
    alice = ks.get("alice@a.example", "signature")
    bob = ks.get("bob@a.example", "encryption")
    trust = smime.Trust(ks.anchors(), ks.crls())
    data = payload.read_bytes() if op in ("sign", "verify", "encrypt") else b""
    start = time.perf_counter()
    if op == "sign":
        out = smime.sign_bytes(data, alice)
        (work / f"mss-{size}.p7s").write_bytes(out)
    elif op == "verify":
        reports = smime.verify_detached(data, (work / f"mss-{size}.p7s").read_bytes(), trust, ["payload"])
        assert reports[0].status == "valid", reports[0]
    elif op == "encrypt":
        (work / f"mss-{size}.p7m").write_bytes(smime.encrypt_bytes(data, [bob.certificate]))
    elif op == "decrypt":
        der = (work / f"mss-{size}.p7m").read_bytes()
        clear = smime.decrypt_bytes(der, [bob])
        assert len(clear) == payload.stat().st_size
    print(time.perf_counter() - start)


def run(cmd: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in KB, stdout) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err}")
    return wall, usage.ru_maxrss, out


def setup(work: Path, sizes: list[str]) -> None:
    from crypto import pki
    from crypto.keystore import KeyStore

    pki.create_ca(work / "pki", "bench")
    ks = KeyStore(work / "pki")
    ks.issue("alice@a.example", "signature")
    ks.issue("bob@a.example", "encryption")
    ks.write_crl()
    master = work / "pki" / "master.key"
    for who, usage in (("alice@a.example", "signature"), ("bob@a.example", "encryption")):
        subprocess.run(["openssl", "pkey", "-in", str(work / "pki" / "users" / who / f"{usage}.key"),
                        "-passin", f"file:{master}", "-out", str(work / f"{usage}.key")], check=True)
    for size in sizes:
        with open(work / f"payload-{size}", "wb") as f:
            remaining = parse_size(size)
            while remaining:
                chunk = os.urandom(min(remaining, 1 << 20))
                f.write(chunk)
                remaining -= len(chunk)


def openssl_cmd(op: str, work: Path, size: str) -> list[str]:
    users = work / "pki" / "users"
    payload = str(work / f"payload-{size}")
    if op == "sign":
        return ["openssl", "cms", "-sign", "-binary", "-in", payload, "-signer",
                str(users / "alice@a.example" / "signature.pem"), "-inkey", str(work / "signature.key"),
                "-md", "sha256", "-outform", "DER", "-out", str(work / f"ossl-{size}.p7s")]
    if op == "verify":
        return ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(work / f"ossl-{size}.p7s"),
                "-content", payload, "-CAfile", str(work / "pki" / "ca.pem"), "-out", "/dev/null"]
    if op == "encrypt":
        return ["openssl", "cms", "-encrypt", "-binary", "-aes256", "-in", payload, "-outform", "DER",
                "-out", str(work / f"ossl-{size}.p7m"), str(users / "bob@a.example" / "encryption.pem")]
    return ["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(work / f"ossl-{size}.p7m"),
            "-inkey", str(work / "encryption.key"), "-out", "/dev/null"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10K,1M,10M,50M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("OP", "WORK", "SIZE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.child[2])
        return
    sizes = args.sizes.split(",")
    with tempfile.TemporaryDirectory(prefix="mss-crypto-bench-") as tmp:
        work = Path(tmp)
        setup(work, sizes)
        _, idle_rss, _ = run([sys.executable, __file__, "--child", "idle", str(work), sizes[0]])
        print(f"python idle RSS (interpreter + imports): {idle_rss / 1024:.0f} MB")
        print("| size | op | mss time | openssl time | ratio | mss peak RSS | mss RSS over idle "
              "| openssl peak RSS |")
        print("|---|---|---|---|---|---|---|---|")
        for size in sizes:
            for op in ("sign", "verify", "encrypt", "decrypt"):
                ours, theirs = [], []
                for _ in range(args.repeat):
                    _, rss, out = run([sys.executable, __file__, "--child", op, str(work), size])
                    ours.append((float(out.strip()), rss))
                    wall, orss, _ = run(openssl_cmd(op, work, size))
                    theirs.append((wall, orss))
                t, rss = min(ours)
                ot, orss = min(theirs)
                print(f"| {size} | {op} | {t * 1000:.1f} ms | {ot * 1000:.1f} ms | {t / ot:.2f}x "
                      f"| {rss / 1024:.0f} MB | {(rss - idle_rss) / 1024:.0f} MB | {orss / 1024:.0f} MB |",
                      flush=True)


if __name__ == "__main__":
    main()
