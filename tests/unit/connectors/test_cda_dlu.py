"""DLU parser: recognition, sections by templateId, trusted person, XML hardening."""

from __future__ import annotations

import pytest

from connectors.formats import ParseError, parse_cda_dlu, parse_cda_header

from .samples import sample_bytes

FULL = sample_bytes("dlu_01_full.xml")


def test_header_and_unique_id():
    header, warnings = parse_cda_header(FULL)
    assert header.unique_id == "2.25.299301712458712009934512741123^DLU-2026-000118"
    assert header.is_dlu and warnings == ()
    assert header.patient.ins == "248022612345607"


def test_sections_are_found_by_template_id_not_position():
    # Swap two sections' order: the content follows the templateId.
    start = FULL.index(b"<component>\n        <section>\n          <templateId root=\"1.3.6.1.4.1.19376.1.5.3.1.3.6\"/>")
    end = FULL.index(b"</component>", start) + len(b"</component>")
    problems = FULL[start:end]
    moved = FULL[:start] + FULL[end:]
    anchor = moved.index(b"</structuredBody>")
    moved = moved[:anchor] + problems + moved[anchor:]
    dlu = parse_cda_dlu(moved)
    assert dlu.section("active_problems")[0].startswith("Insuffisance cardiaque")
    assert dlu.sections_present[-1] == "1.3.6.1.4.1.19376.1.5.3.1.3.6"


def test_legacy_code_is_a_warning_and_other_documents_are_refused():
    legacy = FULL.replace(b'code="74207-2"', b'code="34133-9"', 1)
    assert any("34133-9" in w for w in parse_cda_dlu(legacy).warnings)
    other = FULL.replace(b'code="74207-2"', b'code="11502-2"', 1)
    with pytest.raises(ParseError, match="not a DLU"):
        parse_cda_dlu(other)
    no_template = FULL.replace(b'<templateId root="1.2.250.1.213.1.1.1.22"/>', b"")
    with pytest.raises(ParseError, match="templateId"):
        parse_cda_dlu(no_template)


def test_trusted_person_falls_back_to_participant_ind():
    start = FULL.index(b"<informant>")
    end = FULL.index(b"</informant>") + len(b"</informant>")
    participant = (b'<participant typeCode="IND"><associatedEntity classCode="NOK">'
                   b'<code code="SON" displayName="Fils" codeSystem="2.16.840.1.113883.5.111"/>'
                   b'<telecom value="mailto:x@example.org"/><telecom value="tel:+33600000000"/>'
                   b'<associatedPerson><name><given>Paul</given><family>MARCHAL</family></name>'
                   b'</associatedPerson></associatedEntity></participant>')
    dlu = parse_cda_dlu(FULL[:start] + participant + FULL[end:])
    person = dlu.trusted_person
    assert (person.given, person.relation_code, person.phone) == ("Paul", "SON", "+33600000000")


def test_invalid_ins_key_and_month_are_warnings():
    dlu = parse_cda_dlu(FULL.replace(b"248022612345607", b"248022612345608"))
    assert any("INS key" in w for w in dlu.warnings)
    assert parse_cda_dlu(FULL).warnings == ()
    moved = parse_cda_dlu(FULL.replace(b'<birthTime value="19480214"/>',
                                       b'<birthTime value="19480314"/>'))
    assert any("NIR month 02 is not the birth month 03" in w for w in moved.warnings)


def test_xml_attacks_are_refused():
    xxe = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           b'<ClinicalDocument xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>')
    with pytest.raises(ParseError, match="DOCTYPE"):
        parse_cda_dlu(xxe)
    laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
              b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>')
    with pytest.raises(ParseError):
        parse_cda_dlu(laughs)
    with pytest.raises(ParseError) as info:
        parse_cda_dlu(b"<ClinicalDocument xmlns='urn:hl7-org:v3'>\n<unclosed>")
    assert info.value.line == 2
    with pytest.raises(ParseError, match="not a CDA"):
        parse_cda_dlu(b"<html/>")
