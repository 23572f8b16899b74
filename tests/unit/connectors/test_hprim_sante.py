"""HPRIM Santé parser: delimiters from H, continuation, escapes, structure rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.formats import ParseError, parse_hprim_sante
from connectors.formats.hprim_sante import Delimiters, Escaper, parse_datetime, split_range

from .samples import sample_bytes

H = "H|~^\\&|F.HPS||LAB~LABO||ORU|||MED~DR||P|H2.2~C|202603121045"
P = "P|1|PAT|LAB1||NOM~PRENOM|NAISS|19480214|F||1 RUE~~VILLE~~26240"
OBR = "OBR|1|ORD|FIL|NFS~HEMOGRAMME~L|R||202603120815|||||||202603120930||MED~DOC~ANNE|||||||||F"


def hps(*records: str, end: str = "\r\n") -> bytes:
    return (end.join(records) + end).encode("cp1252")


def test_other_delimiters_are_read_from_h():
    text = hps(H.replace("|", "!").replace("~", "#", 1).replace("H!#^\\&!", "H!#^\\&!"),
               "P!1!PAT!LAB!!NOM#PRENOM", "OBR!1!A!B!T#Test#L", "OBX!1!NM!C#Chol#L!!1.2!g/L",
               "L!1")
    parsed = parse_hprim_sante(text)
    assert parsed.delimiters.field == "!" and parsed.delimiters.component == "#"
    patient = parsed.patients[0]
    assert (patient.last_name, patient.first_name) == ("NOM", "PRENOM")
    assert patient.requests[0].results[0].label == "Chol"


def test_continuation_is_joined_before_splitting():
    parsed = parse_hprim_sante(sample_bytes("hps_03_latin1_continuation.hps"))
    request = parsed.patients[0].requests[0]
    assert request.line == 3 and len(request.tests) == 8
    assert request.results[0].line == 5


def test_escapes_named_and_literal():
    obx = "OBX|1|ST|X~Texte~L||a\\F\\b\\S\\c\\E\\d\\.br\\e\\Z\\||||||F"
    parsed = parse_hprim_sante(hps(H, P, OBR, obx, "L|1"))
    assert parsed.patients[0].requests[0].results[0].value == "a|b~c\\d\ne\\Z\\"
    literal = parse_hprim_sante(hps(H, P, OBR, "OBX|1|ST|X~T~L||a\\|b\\~c\\\\d|u||||F", "L|1"),
                                escape_mode="literal_next")
    result = literal.patients[0].requests[0].results[0]
    assert (result.value, result.unit) == ("a|b~c\\d", "u")


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r")),
       st.sampled_from(["hl7_named", "literal_next"]))
def test_escape_encode_decode_round_trip(text: str, mode: str):
    escaper = Escaper(Delimiters("|", "~", "^", "\\", "&"), mode)
    encoded = escaper.encode(text)
    for separator in "|~^&":
        assert escaper.split(encoded, separator) == [encoded]
    assert escaper.decode(encoded) == text


def test_comments_attach_to_the_previous_record():
    parsed = parse_hprim_sante(sample_bytes("hps_02_multi.hps"))
    first, second = parsed.patients
    assert first.requests[0].results[2].comments == ("Calcul selon Friedewald (TG < 3,4 g/L).",)
    assert second.requests[0].comments == ("Patiente enceinte - 12 SA.",)
    assert second.abnormal_count == 1


def test_ranges_dates_flags():
    assert split_range("4.00-10.00") == ("4.00", "10.00")
    assert split_range("<2,5") == (None, "2,5")
    assert split_range(">10") == ("10", None)
    assert split_range("négatif") == (None, None)
    assert parse_datetime("202603121045") == "2026-03-12T10:45"
    assert parse_datetime("20260312") == "2026-03-12"
    assert parse_datetime("20260312104501") == "2026-03-12T10:45:01"
    assert parse_datetime("20261312") is None and parse_datetime("") is None
    obx = "OBX|1|NM|K~K~L||12|mmol/L|3-5|>|||F"
    result = parse_hprim_sante(hps(H, P, OBR, obx, "L|1")).patients[0].requests[0].results[0]
    assert (result.abnormal, result.off_scale) == (None, "high")


def test_structure_refusals():
    cases = {
        hps(P, "L|1"): (1, "first record must be the H"),
        hps(H, OBR, "L|1"): (2, "before any P"),
        hps(H, P, "OBX|1|NM|A~B~L||1", "L|1"): (3, "before any OBR"),
        hps(H, P, OBR): (3, "no L trailer"),
        hps(H, P, OBR, "L|1", "P|2"): (5, "after the L trailer"),
        hps("H|~~\\&|x", P, "L|1"): (1, "not 5 different"),
        hps("MSH|^~\\&|A|B", "PID|1"): (1, "HL7 v2"),
    }
    for data, (line, words) in cases.items():
        with pytest.raises(ParseError) as info:
            parse_hprim_sante(data)
        assert info.value.line == line, data
        assert words in info.value.message, info.value.message
    with pytest.raises(ParseError):
        parse_hprim_sante(b"")
    with pytest.raises(ValueError):
        parse_hprim_sante(hps(H, "L|1"), escape_mode="nope")


def test_skipped_and_unknown_records_are_warnings():
    parsed = parse_hprim_sante(hps(H, P, "FAC|1|x", "ZZZ|1", "L|1"))
    assert any("FAC record skipped" in w for w in parsed.warnings)
    assert any("unknown record type 'ZZZ'" in w for w in parsed.warnings)


def test_reader_streams_patients_and_refuses_a_missing_trailer_at_the_end():
    from connectors.formats import HprimSanteReader

    data = sample_bytes("hps_02_multi.hps")
    reader = HprimSanteReader(data)
    assert reader.header.sender_id == "LAB0042"
    assert tuple(reader.patients()) == parse_hprim_sante(data).patients
    truncated = HprimSanteReader(data.replace(b"L|1\r\n", b""))
    patients = truncated.patients()
    assert next(patients).last_name == "KERGUELEN"
    with pytest.raises(ParseError, match="no L trailer"):
        next(patients)
