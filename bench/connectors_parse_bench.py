"""Benchmark: connector parse throughput and peak memory on big generated files.

Usage: .venv/bin/python bench/connectors_parse_bench.py [--size 50M] [--repeat 3]
       [--formats hprim-net,hprim-sante]

Generates an HPRIM Net file and an HPRIM Santé file of --size (realistic records:
12-line header, a readable report and a LAB block of 15 results per patient for HPRIM
Net; P, OBR, 15 OBX and a comment per patient for HPRIM Santé, CP1252 with accents,
CRLF), then parses each in a fresh process so its peak RSS (ru_maxrss) is its own.
Reported per format and mode (``full``: the whole result built; ``stream``: the
streaming readers, one record or patient at a time, as a router consumes a big file):
MB/s of the parse alone (reading the file excluded) in wall time and in CPU time (the
CPU figure is what the parser costs when the machine is shared), the process's peak
RSS (interpreter, modules, the input bytes and the result), and that peak as a
multiple of the input size. Targets (issue 13):
HPRIM Net >= 30 MB/s, HPRIM Santé >= 15 MB/s, peak RSS <= 3x the input. Best of
--repeat runs. Run it alone: flock /tmp/mss-bench.lock .venv/bin/python bench/...
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}
TESTS = [("HEMA", "Hématies", "T/L", "3.80", "5.40"), ("HB", "Hémoglobine", "g/dL", "12.0", "16.0"),
         ("GB", "Leucocytes", "G/L", "4.00", "10.00"), ("PLAQ", "Plaquettes", "G/L", "150", "400"),
         ("NA", "Sodium", "mmol/L", "136", "145"), ("K", "Potassium", "mmol/L", "3.5", "5.0"),
         ("CREA", "Créatinine", "µmol/L", "45", "90"), ("GLY", "Glycémie", "g/L", "0.70", "1.10"),
         ("CRP", "Protéine C réactive", "mg/L", "0", "5"), ("TSH", "TSH", "mUI/L", "0.40", "4.00"),
         ("FERR", "Ferritine", "µg/L", "15", "150"), ("ASAT", "ASAT", "UI/L", "5", "40"),
         ("ALAT", "ALAT", "UI/L", "5", "40"), ("GGT", "Gamma GT", "UI/L", "8", "61"),
         ("CHOL", "Cholestérol total", "g/L", "1.50", "2.00")]
FLAGS = ["N", "N", "N", "H", "L", "N", "HH", "N", ""]


def parse_size(text: str) -> int:
    unit = text[-1].upper()
    return int(float(text[:-1]) * UNITS[unit]) if unit in UNITS else int(text)


def _value(i: int, j: int, low: str, high: str) -> str:
    a, b = float(low), float(high)
    value = a + (b - a) * (((i * 7 + j * 13) % 23) / 15.0)
    return f"{value:.2f}"


def _nir(i: int) -> str:
    """A NIR with the birth month and year of patient ``i`` and a valid key (a real
    header does not warn on every record)."""
    from connectors.formats.nir import nir_key

    nir = f"2{i % 80 + 20:02d}{i % 12 + 1:02d}26{i % 1000:03d}{i % 997:03d}"
    return f"{nir} {nir_key(nir):02d}"


def hprim_net_record(i: int) -> str:
    lines = [f"{i:07d}", f"NOM{i % 997}ÉÈ", "PRÉNOM", f"{i % 90 + 1} RUE DES ACACIAS", "",
             "26240 SAINT-VALLIER", f"{i % 28 + 1:02d}/{i % 12 + 1:02d}/19{i % 80 + 20}",
             _nir(i), f"26{i:08d}", "12/03/2026",
             "LAB0042   LABORATOIRE DES TILLEULS - SITE NORD", "MED0815   DR LEBRETON ARNAUD",
             "", "             LABORATOIRE DES TILLEULS - COMPTE RENDU",
             "Prélèvement du 12/03/2026 à 08h15", ""]
    values = []
    for j, (_code, label, unit, low, high) in enumerate(TESTS):
        value = _value(i, j, low, high)
        values.append(value)
        lines.append(f"  {label:.<24} {value} {unit:<8} ({low} - {high})")
    lines += ["", "Résultats validés par Dr C. FONTANEL, biologiste.", "", "****LAB****",
              "TEX|HÉMATOLOGIE"]
    for j, (code, label, unit, low, high) in enumerate(TESTS):
        flag = FLAGS[(i + j) % len(FLAGS)]
        lines.append(f"RES|{label}|{code}|N|{values[j]}|{unit}|{low}|{high}|{flag}|F|||||")
    lines += ["TEX|Résultats validés.", "****FIN****"]
    return "\r\n".join(lines) + "\r\n"


def hprim_sante_patient(i: int) -> str:
    lines = [f"P|{i}|PAT{i}|L26-{i:06d}||NOM{i % 997}É~PRÉNOM|NAISS|19{i % 80 + 20}0214|F||"
             f"{i % 90 + 1} RUE DES ACACIAS~~SAINT-VALLIER~~26240",
             f"OBR|1|ORD-{i}|26{i:08d}|NFS~HÉMOGRAMME~L^IONO~IONOGRAMME~L|R||202603120815||||N|||"
             "202603120930||MED0815~LEBRETON~ARNAUD||||||20260312|||F"]
    for j, (code, label, unit, low, high) in enumerate(TESTS):
        flag = FLAGS[(i + j) % len(FLAGS)]
        lines.append(f"OBX|{j + 1}|NM|{code}~{label}~L||{_value(i, j, low, high)}|{unit}|"
                     f"{low}-{high}|{flag}|||F|||202603121010")
    lines.append("C|1|L|Résultat contrôlé sur un second prélèvement.|G")
    return "\r\n".join(lines) + "\r\n"


def generate(kind: str, size: int, path: Path) -> int:
    """Write a file of about ``size`` bytes; returns the number of patients."""
    written = count = 0
    with path.open("wb") as out:
        if kind == "hprim-sante":
            head = ("H|~^\\&|BENCH.HPS||LAB0042~LABORATOIRE DES TILLEULS||ORU|||"
                    "MED0815~DR LEBRETON ARNAUD||P|H2.2~C|202603121045\r\n").encode("cp1252")
            out.write(head)
            written += len(head)
        while written < size:
            text = hprim_net_record(count) if kind == "hprim-net" else hprim_sante_patient(count)
            chunk = text.encode("cp1252")
            out.write(chunk)
            written += len(chunk)
            count += 1
        tail = b"****FINFICHIER****\r\n" if kind == "hprim-net" else b"L|1\r\n"
        out.write(tail)
    return count


def child(kind: str, mode: str, path: str) -> None:
    """Parse one file; print the parse time, counts and memory as JSON.

    ``full``: ``parse_hprim_*`` builds the whole result. ``stream``: the readers yield
    one record (patient) at a time, as a router handles a big file."""
    from connectors.formats import (
        HprimNetReader,
        HprimSanteReader,
        parse_hprim_net,
        parse_hprim_sante,
    )

    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    data = Path(path).read_bytes()
    started, cpu_started = time.perf_counter(), time.process_time()
    if kind == "hprim-net" and mode == "full":
        parsed = parse_hprim_net(data)
        results = sum(len(r.results) for r in parsed.records)
        parts = len(parsed.records)
    elif kind == "hprim-net":
        parts = results = 0
        for parts, record in enumerate(HprimNetReader(data).records(), 1):  # noqa: B007
            results += len(record.results)
    elif mode == "full":
        parsed_sante = parse_hprim_sante(data)
        results = sum(len(q.results) for p in parsed_sante.patients for q in p.requests)
        parts = len(parsed_sante.patients)
    else:
        parts = results = 0
        for parts, patient in enumerate(HprimSanteReader(data).patients(), 1):  # noqa: B007
            results += sum(len(q.results) for q in patient.requests)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "bytes": len(data),
                      "parts": parts, "results": results, "idle_rss": idle,
                      "peak_rss": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="50M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="hprim-net,hprim-sante")
    parser.add_argument("--modes", default="full,stream")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "MODE", "PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    size = parse_size(args.size)
    targets = {"hprim-net": 30.0, "hprim-sante": 15.0}
    with tempfile.TemporaryDirectory(prefix="mss-conn-bench-") as tmp:
        print(f"{'format':<12} {'mode':<7} {'size MB':>8} {'patients':>9} {'results':>9} "
              f"{'MB/s':>6} {'cpu MB/s':>9} {'peak RSS MB':>12} {'x input':>8} "
              f"{'idle MB':>8}  target")
        for kind in args.formats.split(","):
            path = Path(tmp) / f"bench.{kind}"
            generate(kind, size, path)
            for mode in args.modes.split(","):
                best: dict | None = None
                for _ in range(args.repeat):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", kind, mode, str(path)],
                        capture_output=True, text=True, check=True)
                    run = json.loads(out.stdout)
                    if best is None or run["seconds"] < best["seconds"]:
                        best = run
                assert best is not None
                mb = best["bytes"] / 1e6
                rate, cpu_rate = mb / best["seconds"], mb / best["cpu_seconds"]
                ratio = best["peak_rss"] / best["bytes"]
                verdict = "met" if rate >= targets[kind] and ratio <= 3 else "NOT met"
                print(f"{kind:<12} {mode:<7} {mb:>8.1f} {best['parts']:>9} "
                      f"{best['results']:>9} {rate:>6.1f} {cpu_rate:>9.1f} "
                      f"{best['peak_rss'] / 1e6:>12.1f} {ratio:>8.2f} "
                      f"{best['idle_rss'] / 1e6:>8.1f}  >= {targets[kind]:.0f} MB/s, <= 3x: "
                      f"{verdict}", flush=True)


if __name__ == "__main__":
    main()
