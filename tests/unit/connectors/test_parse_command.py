"""`mss connector parse FILE --json`: the public contract, run as a real subprocess over
every sample and over files that must be refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .samples import SAMPLE_FILES, SAMPLES, expected, make_zip, sample_bytes, xdm_files

ROOT = Path(__file__).resolve().parents[3]


def parse(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "connector", "parse", str(path),
                           "--json", *options], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


@pytest.mark.parametrize("stem", sorted(SAMPLE_FILES))
def test_every_sample_parses_to_its_expected_json(stem: str):
    result = parse(SAMPLES / SAMPLE_FILES[stem])
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == expected(stem)


def test_xdm_as_a_zip_gives_the_same_result_as_the_folder(tmp_path: Path):
    archive = tmp_path / "IHE_XDM.ZIP"
    archive.write_bytes(make_zip(xdm_files()))
    result = parse(archive)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == expected("xdm")


def test_explicit_kind_is_honoured(tmp_path: Path):
    # An HPRIM Santé file read as HPRIM Net is not silently accepted as Santé.
    result = parse(SAMPLES / "hps_01_simple.hps", "--kind", "hprim-net")
    assert result.returncode == 1
    assert "header" in json.loads(result.stdout)["error"]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(path: Path, *options: str) -> dict:
    result = parse(path, *options)
    assert result.returncode == 1, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"error", "line"}
    return body


def test_truncated_hprim_net_header_is_refused(tmp_path: Path):
    lines = sample_bytes("hprnet_01_abnormal.hpr").split(b"\r\n")[:7]
    body = _refused(_write(tmp_path, "cut.hpr", b"\r\n".join(lines) + b"\r\n"))
    assert "header truncated" in body["error"] and body["line"] == 1


def test_unclosed_lab_section_is_refused(tmp_path: Path):
    data = sample_bytes("hprnet_01_abnormal.hpr")
    data = data.split(b"****FIN****")[0]
    body = _refused(_write(tmp_path, "open.hpr", data))
    assert "not closed" in body["error"] and body["line"] == 27


def test_obx_before_obr_is_refused(tmp_path: Path):
    lines = sample_bytes("hps_01_simple.hps").split(b"\r\n")
    # H, P, then the OBX lines without their OBR: line 3 is the first OBX.
    data = b"\r\n".join([lines[0], lines[1], *lines[3:]])
    body = _refused(_write(tmp_path, "obx.hps", data))
    assert "OBX result before any OBR" in body["error"] and body["line"] == 3


def test_obr_before_p_is_refused(tmp_path: Path):
    lines = sample_bytes("hps_01_simple.hps").split(b"\r\n")
    data = b"\r\n".join([lines[0], lines[2], lines[1], *lines[3:]])
    body = _refused(_write(tmp_path, "obr.hps", data))
    assert "before any P" in body["error"] and body["line"] == 2


def test_missing_l_trailer_is_refused(tmp_path: Path):
    data = sample_bytes("hps_01_simple.hps").replace(b"L|1\r\n", b"")
    body = _refused(_write(tmp_path, "nol.hps", data))
    assert "no L trailer" in body["error"] and body["line"] == 8


def test_hl7_v2_file_is_refused_by_name(tmp_path: Path):
    message = b"MSH|^~\\&|LAB|X|DUI|Y|202603121045||ORU^R01|1|P|2.5\rPID|||1\r"
    body = _refused(_write(tmp_path, "msg.hl7", message))
    assert "HL7 v2" in body["error"] and body["line"] == 1
    body = _refused(_write(tmp_path, "msg.hps", message), "--kind", "hprim-sante")
    assert "HL7 v2" in body["error"]


def test_duplicate_delimiters_are_refused(tmp_path: Path):
    data = sample_bytes("hps_01_simple.hps").replace(b"H|~^\\&|", b"H|~^\\~|", 1)
    body = _refused(_write(tmp_path, "dup.hps", data), "--kind", "hprim-sante")
    assert "not 5 different" in body["error"] and body["line"] == 1


def test_xdm_zip_slip_entry_is_refused(tmp_path: Path):
    files = xdm_files()
    files["../../etc/evil.txt"] = b"owned"
    body = _refused(_write(tmp_path, "slip.zip", make_zip(files)))
    assert "leaves its folder" in body["error"] and body["line"] is None


def test_xdm_uri_leaving_the_subset_folder_is_refused(tmp_path: Path):
    files = xdm_files()
    metadata = "IHE_XDM/SUBSET01/METADATA.XML"
    files[metadata] = files[metadata].replace(b"<rim:Value>DOC0001.XML</rim:Value>",
                                              b"<rim:Value>../../README.TXT</rim:Value>")
    body = _refused(_write(tmp_path, "uri.zip", make_zip(files)))
    assert "leaves its folder" in body["error"] and body["line"] == 4


def test_xdm_zip_bomb_is_refused_before_decompression(tmp_path: Path):
    files = xdm_files()
    files["IHE_XDM/SUBSET01/BOMB.BIN"] = b"\0" * (20 * 1024 * 1024)
    body = _refused(_write(tmp_path, "bomb.zip", make_zip(files)))
    assert "zip bomb" in body["error"]


def test_xdm_bad_sha1_is_refused(tmp_path: Path):
    files = xdm_files()
    document = "IHE_XDM/SUBSET01/DOC0001.XML"
    files[document] = files[document].replace(b"Madeleine", b"Madeleinf", 1)
    body = _refused(_write(tmp_path, "sha.zip", make_zip(files)))
    assert "SHA-1" in body["error"] and body["line"] == 4


def test_human_output_and_usage_errors(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "cli", "connector", "parse",
                             str(SAMPLES / "hprnet_02_multi.hpr")], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("format: hprim_net")
    assert result.stdout.count("4 results") == 3
    wrong = subprocess.run([sys.executable, "-m", "cli", "connector", "parse",
                            str(SAMPLES / "xdm"), "--kind", "dlu"], capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    assert wrong.returncode == 2
