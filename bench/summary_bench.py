"""Micro-benchmark of the delivery thread's per-message parsing: µs per call.

summarize, looks_protected, strip_our_results and check_incoming (verification on,
plain mail: the pre-check path) on the SMTP acceptance benchmark's 10 KB multipart
message and on a short plain-text message. Run before and after a change, under
`flock /tmp/mss-bench.lock`.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from smtp_accept_bench import make_message

from crypto.mailflow import check_incoming, looks_protected, strip_our_results
from mssmail.store.summary import summarize

PLAIN = (b"Return-Path: <jean.martin@a.example>\r\nReceived: from a.example by mx.b.example; "
         b"Mon, 2 Nov 2026 10:00:00 +0100\r\nFrom: Jean Martin <jean.martin@a.example>\r\n"
         b"To: claire.durand@a.example\r\nSubject: =?utf-8?q?Compte_rendu_d=27op=C3=A9ration?=\r\n"
         b"Date: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <plain-1@a.example>\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
         + b"Compte rendu sans pi\xc3\xa8ce jointe.\r\n" * 20)


def _config() -> SimpleNamespace:
    crypto = SimpleNamespace(authserv_id="mx.b.example", verify_incoming=True)
    return SimpleNamespace(crypto=crypto, hostname="mx.b.example", data_dir=Path("/nonexistent"))


def measure(name: str, func, number: int) -> float:
    """Best of five runs, µs per call: the minimum is the least disturbed by neighbours."""
    best = min(timeit.repeat(func, number=number, repeat=5)) / number * 1e6
    print(f"{name:<40} {best:8.2f} µs")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    config = _config()
    for label, raw in (("bench multipart", make_message(1)), ("plain text", PLAIN)):
        print(f"-- {label}: {len(raw)} bytes")
        measure("summarize", lambda raw=raw: summarize(raw), args.number)
        measure("looks_protected", lambda raw=raw: looks_protected(raw), args.number)
        measure("strip_our_results", lambda raw=raw: strip_our_results(raw, "mx.b.example"), args.number)
        measure("check_incoming (plain mail path)",
                lambda raw=raw: check_incoming(config, ["claire.durand@a.example"], raw), args.number)


if __name__ == "__main__":
    main()
