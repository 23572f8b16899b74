"""HL7 v2 serialisers, checked by a real HL7 peer library (python-hl7) against the
values of the samples' expected JSON (not against our own parser)."""

from __future__ import annotations

import base64

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.formats import parse_cda_header, parse_hprim_net, parse_hprim_sante
from connectors.formats.hl7v2 import (
    Hl7Options,
    MailContext,
    QualifiedIns,
    escape,
    mdm_from_cda,
    oru_r01_from_hprim_net,
    oru_r01_from_hprim_sante,
    segment,
)

from .samples import expected, sample_bytes

OPTIONS = Hl7Options(control_id="JOB-1f3a", timestamp="20260312104500",
                     receiving_application="DUI", receiving_facility="EHPAD")


def text(message: hl7.Message, value: object) -> str:
    return message.unescape(str(value))


def nm(value: str) -> str:
    return value.replace(",", ".")


def check_results(message: hl7.Message, results: list[dict], numeric_type: str) -> None:
    obx = message.segments("OBX")
    assert len(obx) == len(results)
    for segment_, result in zip(obx, results, strict=True):
        assert text(message, segment_[3][0][0]) == result["code"]
        assert text(message, segment_[3][0][1]) == result["label"]
        if segment_[2][0] == "NM":
            assert result[numeric_type] in ("N", "NM")
            assert str(segment_[5][0]) == nm(result["value"])
        elif segment_[2][0] == "CE":
            assert text(message, segment_[5][0][0]) == result["value_code"]
            assert text(message, segment_[5][0][1]) == result["value_label"]
        else:
            assert text(message, segment_[5]) == result["value"]
        assert text(message, segment_[6]) == result["unit"]
        assert text(message, segment_[8]) == result["flag"]
        assert str(segment_[11]) == (result["status"] or "F")


@pytest.mark.parametrize("name", ["hprnet_01_abnormal", "hprnet_02_multi", "hprnet_03_cp1252"])
def test_oru_from_hprim_net_parses_to_the_sample_values(name: str):
    parsed = parse_hprim_net(sample_bytes(f"{name}.hpr"))
    for record, want in zip(parsed.records, expected(name)["records"], strict=True):
        message = hl7.parse(oru_r01_from_hprim_net(record, OPTIONS))
        msh = message.segment("MSH")
        assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[10]) == "JOB-1f3a"
        assert str(msh[12]) == "2.5" and str(msh[5]) == "DUI"
        pid = message.segment("PID")
        assert text(message, pid[5][0][0]) == want["patient"]["last_name"]
        assert text(message, pid[5][0][1]) == want["patient"]["first_name"]
        assert str(pid[7]) == want["patient"]["birth_date"].replace("-", "")
        assert "INS" not in str(pid[3])  # HPRIM Net carries no qualified INS
        assert text(message, message.segment("OBR")[3]) == want["request_id"]
        check_results(message, want["results"], "type")


@pytest.mark.parametrize("name", ["hps_01_simple", "hps_02_multi", "hps_03_latin1_continuation"])
def test_oru_from_hprim_sante_parses_to_the_sample_values(name: str):
    parsed = parse_hprim_sante(sample_bytes(f"{name}.hps"))
    for patient, want in zip(parsed.patients, expected(name)["patients"], strict=True):
        message = hl7.parse(oru_r01_from_hprim_sante(parsed, patient, OPTIONS))
        pid = message.segment("PID")
        names = {str(rep[6]): (text(message, rep[0]), text(message, rep[1])) for rep in pid[5]}
        assert names["D"] == (want["last_name"], want["first_name"])
        if want["birth_name"] and want["birth_name"] != want["last_name"]:
            assert names["L"][0] == want["birth_name"]
        assert str(pid[8]) == want["sex"]
        results = [r for request in want["requests"] for r in request["results"]]
        check_results(message, results, "value_type")
        obr = message.segments("OBR")
        assert [text(message, o[3]) for o in obr] == [r["filler_id"] for r in want["requests"]]
        notes = [text(message, s[3]) for s in message if str(s[0]) == "NTE"]
        for request in want["requests"]:
            for comment in request["comments"]:
                assert comment in notes


def test_pid3_carries_the_ins_only_when_qualified():
    record = parse_hprim_net(sample_bytes("hprnet_01_abnormal.hpr")).records[0]
    message = hl7.parse(oru_r01_from_hprim_net(record, OPTIONS, QualifiedIns("248022612345607")))
    ins, local = message.segment("PID")[3]
    assert str(ins) == "248022612345607^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
    assert str(local[0]) == "0004512"


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1))
def test_escaped_text_survives_a_real_parser(value: str):
    # A segment after the NTE: python-hl7 strips trailing whitespace off a whole message.
    message = hl7.parse("MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5\r" + segment("NTE", "1", "L", value)
                        + "\rZZZ|1")
    assert message.unescape(str(message.segment("NTE")[3])) == value
    assert "|" not in escape(value) and "^" not in escape(value)


CDA = sample_bytes("dlu_01_full.xml")
MAIL = MailContext(sender="secretariat-medical@ehpad-glycines.mssante.example",
                   recipients=("urgences@ch-valence-nord.mssante.example",),
                   reply_to=("medecin@ehpad-glycines.mssante.example",),
                   message_id="<dlu-118@ehpad-glycines.mssante.example>",
                   subject="XDM/1.0/DDM+DLU MARCHAL Madeleine 14/02/1948",
                   body=b"Veuillez trouver le DLU.", confidentiality_codes=("INVISIBLE_PATIENT",))


def test_mdm_t02_follows_the_ans_volet():
    header, _ = parse_cda_header(CDA)
    message = hl7.parse(mdm_from_cda(CDA, header, MAIL, OPTIONS))
    msh = message.segment("MSH")
    assert str(msh[9]) == "MDM^T02^MDM_T02" and str(msh[12]) == "2.6"
    assert str(msh[21]) == "1.1^CISIS_CDA_HL7_LPS" and str(msh[17]) == "FRA"
    assert str(message.segment("PV1")[2]) == "N"
    assert str(message.segment("ORC")[1]) == "NW"
    txa = message.segment("TXA")
    assert str(txa[2]) == "74207-2" and str(txa[3]) == "TEXT" and str(txa[17]) == "AU"
    assert str(txa[12]) == "DLU-2026-000118^^2.25.299301712458712009934512741123^ISO"
    pid = message.segment("PID")
    assert str(pid[3][0]) == "248022612345607^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
    first, second, *meta = message.segments("OBX")
    assert str(first[2]) == "ED" and str(first[11]) == "F"
    data = first[5][0]
    assert [str(data[i]) for i in (1, 2, 3)] == ["text", "XML", "Base64"]
    assert base64.b64decode(str(data[4])) == CDA
    assert text(message, second[3][0][0]) == MAIL.message_id
    assert base64.b64decode(str(second[5][0][4])) == MAIL.body
    flags = {str(m[3][0][0]): str(m[5][0][0]) for m in meta}
    assert flags == {"MASQUE_PS": "N", "INVISIBLE_PATIENT": "Y", "INVISIBLE_REP_LEGAUX": "N",
                     "MODIF_CONF_CODE": "N"}
    roles = [(str(p[4][0][0]), str(p[15][0][3])) for p in message.segments("PRT")]
    assert roles == [("SB", MAIL.sender), ("RCT", MAIL.recipients[0]), ("REPLY", MAIL.reply_to[0])]


def test_mdm_t10_for_a_replacement_and_v25_without_prt():
    replacing = CDA.replace(b"<setId", b'<relatedDocument typeCode="RPLC"><parentDocument>'
                            b'<id root="2.25.1" extension="DLU-2026-000117"/></parentDocument>'
                            b"</relatedDocument><setId", 1)
    header, _ = parse_cda_header(replacing)
    message = hl7.parse(mdm_from_cda(replacing, header, MAIL, OPTIONS))
    assert str(message.segment("MSH")[9]) == "MDM^T10^MDM_T02"
    assert str(message.segment("ORC")[1]) == "RO"
    assert str(message.segment("TXA")[13]) == "DLU-2026-000117^^2.25.1^ISO"
    assert str(message.segments("OBX")[0][11]) == "C"
    older = hl7.parse(mdm_from_cda(CDA, parse_cda_header(CDA)[0], MAIL, OPTIONS, version="2.5"))
    assert str(older.segment("MSH")[12]) == "2.5"
    assert not any(str(s[0]) == "PRT" for s in older)
    unqualified = hl7.parse(mdm_from_cda(CDA, header, MAIL, OPTIONS, ins_qualified=False))
    assert "INS" not in str(unqualified.segment("PID")[3])
