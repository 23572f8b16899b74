"""The routing view: one part per record / patient / document, with the counts."""

from __future__ import annotations

import pytest

from connectors.formats import parse_content
from connectors.formats.summary import parts

from .samples import SAMPLE_FILES, SAMPLES, expected


@pytest.mark.parametrize("stem", sorted(SAMPLE_FILES))
def test_parts_match_the_expected_json(stem: str):
    path = SAMPLES / SAMPLE_FILES[stem]
    result = parse_content(path if path.is_dir() else path.read_bytes())
    found = parts(result)
    want = expected(stem)
    if want["format"] == "hprim_net":
        assert [p.abnormal_count for p in found] == [
            sum(1 for r in rec["results"] if r["abnormal"]) for rec in want["records"]]
        assert [p.result_lines for p in found] == [
            tuple(r["line"] for r in rec["results"]) for rec in want["records"]]
        assert all(p.patient.ins is None for p in found)  # an HPRIM NIR is never an INS
    elif want["format"] == "hprim_sante":
        assert [p.line for p in found] == [p["line"] for p in want["patients"]]
        assert [p.result_count for p in found] == [
            sum(len(q["results"]) for q in p["requests"]) for p in want["patients"]]
    elif want["format"] == "cda_dlu":
        (part,) = found
        assert part.kind == "cda:74207-2" and part.patient.ins == want["patient"]["ins"]
    else:
        (part,) = found
        document = want["submission_sets"][0]["documents"][0]
        assert part.document_id == document["unique_id"]
        assert part.patient.ins == want["submission_sets"][0]["ins"]
