"""HPRIM Net output for folder drop: re-encoding and rendering, checked by reading the
result back with the HPRIM Net parser."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.formats import parse_cda_dlu, parse_hprim_net, parse_hprim_sante
from connectors.formats.hprim_net import HprimNetPatient, HprimNetRecord, HprimNetResult, Party
from connectors.formats.hprim_out import (
    reencode,
    render_dlu,
    render_hprim_sante_patient,
    render_record,
)

from .samples import sample_bytes


def without_lines(data: dict) -> dict:
    data = dict(data)
    data.pop("start_line", None)
    data["results"] = [{k: v for k, v in r.items() if k != "line"} for r in data["results"]]
    return data


@pytest.mark.parametrize("charset,newline", [("utf-8", "LF"), ("cp1252", "CRLF")])
def test_reencode_keeps_the_content(charset: str, newline: str):
    original = sample_bytes("hprnet_03_cp1252.hpr")
    encoded = reencode(original, charset, newline)
    again = parse_hprim_net(encoded.data)
    assert [r.to_dict() for r in again.records] == [
        r.to_dict() for r in parse_hprim_net(original).records]
    assert again.line_ending == newline and encoded.replaced == 0


def test_reencode_counts_what_the_charset_lacks():
    original = sample_bytes("hprnet_03_cp1252.hpr")
    text = original.decode("cp1252")
    missing = sum(1 for ch in text if ch not in "\r\n" and ch.encode("cp1252")[0] in range(0x80, 0xA0))
    encoded = reencode(original, "iso-8859-1", "LF")
    assert encoded.replaced == missing > 0  # Œ œ ’ – have no ISO-8859-1 code
    assert encoded.data.count(b"?") == original.count(b"?") + missing
    with pytest.raises(ValueError):
        reencode(original, "utf-16", "LF")


@pytest.mark.parametrize("name", ["hprnet_01_abnormal", "hprnet_02_multi", "hprnet_03_cp1252"])
def test_each_record_renders_alone_and_reads_back(name: str):
    for record in parse_hprim_net(sample_bytes(f"{name}.hpr")).records:
        (again,) = parse_hprim_net(render_record(record).data).records
        assert without_lines(again.to_dict()) == without_lines(record.to_dict())


plain = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x17F,
                                       blacklist_characters="|*"), max_size=20).map(str.strip)
# Header lines keep their spaces only inside; codes fit in 10 columns.
code = st.text(alphabet="ABCDEFGHIJ0123456789", min_size=1, max_size=10)
flag = st.sampled_from(["", "N", "L", "H", "LL", "HH", "A", "<", ">"])


@st.composite
def records(draw: st.DrawFn) -> HprimNetRecord:
    results = tuple(
        HprimNetResult(*(draw(plain) for _ in range(7)), flag=draw(flag), status=draw(plain),
                       value2=draw(plain), unit2=draw(plain), low2=draw(plain),
                       high2=draw(plain), abnormal=None, off_scale=None, line=0)
        for _ in range(draw(st.integers(0, 5))))
    patient = HprimNetPatient(id=draw(plain.filter(bool)), last_name=draw(plain),
                              first_name=draw(plain), address1=draw(plain),
                              address2=draw(plain), postcode="75001",
                              city=draw(plain.filter(lambda c: c and " " not in c)),
                              birth_date="1950-01-31", nir="1500175123456", nir_key="")
    body = draw(st.lists(plain, max_size=4))
    return HprimNetRecord(
        start_line=1, patient=patient, request_id=draw(plain), request_date="2026-03-12",
        sender=Party(draw(code), draw(plain)), recipient=Party(draw(code), draw(plain)),
        body_text="\n".join(body), results=results,
        lab_text=tuple(draw(st.lists(plain, max_size=3))), has_lab=True, end_line=0)


@given(records())
def test_render_then_parse_is_the_identity(record: HprimNetRecord):
    (again,) = parse_hprim_net(render_record(record, "utf-8").data).records
    want = record.to_dict()
    for result in want["results"]:
        result["abnormal"], result["off_scale"] = {
            "L": (True, None), "H": (True, None), "LL": (True, None), "HH": (True, None),
            "A": (True, None), "<": (None, "low"), ">": (None, "high")}.get(
                result["flag"], (False, None))
        if result["off_scale"] is None:
            del result["off_scale"]
    assert without_lines(again.to_dict()) == without_lines(want)


def test_hprim_sante_patient_as_hprim_net():
    parsed = parse_hprim_sante(sample_bytes("hps_02_multi.hps"))
    for patient in parsed.patients:
        (record,) = parse_hprim_net(render_hprim_sante_patient(parsed, patient).data).records
        results = [r for q in patient.requests for r in q.results]
        assert [r.code for r in record.results] == [r.code for r in results]
        assert [r.flag for r in record.results] == [r.flag for r in results]
        assert [r.abnormal for r in record.results] == [r.abnormal for r in results]
        assert record.patient.last_name == patient.last_name
        assert record.patient.birth_date == patient.birth_date
        assert record.sender.code == parsed.header.sender_id
    toxo = parse_hprim_net(render_hprim_sante_patient(parsed, parsed.patients[1]).data)
    assert toxo.records[0].results[0].value == "Negatif"  # the CE label, not "NEG~Negatif~L"


def test_dlu_as_hprim_net_and_marker_injection():
    dlu = parse_cda_dlu(sample_bytes("dlu_01_full.xml"))
    (record,) = parse_hprim_net(render_dlu(dlu).data).records
    assert (record.patient.last_name, record.patient.nir, record.patient.nir_key) == (
        "MARCHAL", "2480226123456", "07")
    assert "Furosémide 40 mg ; 1 cp le matin ; per os" in record.body_text
    assert record.recipient.name == "LEBRETON Arnaud"
    hostile = dataclasses.replace(dlu, sections=tuple(
        (key, "****FIN****\n****LAB****" if key == "comment" else content)
        for key, content in dlu.sections))
    parsed = parse_hprim_net(render_dlu(hostile).data)
    assert len(parsed.records) == 1 and not parsed.records[0].has_lab
    assert "'****FIN****'" in parsed.records[0].body_text
