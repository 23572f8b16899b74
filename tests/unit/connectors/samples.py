"""Access to the public connector samples copied into tests/data/samples."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
XDM_DIR = SAMPLES / "xdm"


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def expected(stem: str) -> dict[str, Any]:
    """The expected JSON of a sample, as the parse command must print it.

    Two keys of the sample files are annotations for humans, not parser output:
    ``note`` (a comment) and, in the XDM one, ``content_expected`` (the name of the
    file holding the expected parse of that document): it is replaced by that file's
    content under ``content``, which the command prints for a CDA document.
    """
    data = json.loads((SAMPLES / f"{stem}.expected.json").read_text(encoding="utf-8"))
    data.pop("note", None)
    for subset in data.get("submission_sets", []):
        for document in subset["documents"]:
            reference = document.pop("content_expected", None)
            if reference:
                document["content"] = json.loads((SAMPLES / reference).read_text("utf-8"))
    return data


def xdm_files() -> dict[str, bytes]:
    return {p.relative_to(XDM_DIR).as_posix(): p.read_bytes()
            for p in sorted(XDM_DIR.rglob("*")) if p.is_file()}


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


SAMPLE_FILES = {
    "hprnet_01_abnormal": "hprnet_01_abnormal.hpr",
    "hprnet_02_multi": "hprnet_02_multi.hpr",
    "hprnet_03_cp1252": "hprnet_03_cp1252.hpr",
    "hps_01_simple": "hps_01_simple.hps",
    "hps_02_multi": "hps_02_multi.hps",
    "hps_03_latin1_continuation": "hps_03_latin1_continuation.hps",
    "dlu_01_full": "dlu_01_full.xml",
    "dlu_02_minimal": "dlu_02_minimal.xml",
    "xdm": "xdm",
}
