"""FHIR Bundles: every one loads in fhir.resources (R4B models) and carries the
samples' values; conditional creates make a retry create nothing twice."""

from __future__ import annotations

import base64

import pytest
from fhir.resources.R4B.bundle import Bundle

from connectors.formats import parse_cda_header, parse_hprim_net, parse_hprim_sante
from connectors.formats.fhir import (
    INTERPRETATION,
    bundle_from_cda,
    bundle_from_hprim_net,
    bundle_from_hprim_sante,
    fhir_datetime,
)
from connectors.formats.hl7v2 import QualifiedIns

from .samples import expected, sample_bytes


def resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def check_bundle(bundle: dict) -> None:
    model = Bundle.model_validate(bundle)
    assert model.type == "transaction"
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    for entry in bundle["entry"]:
        request = entry["request"]
        assert request["method"] == "POST"
        system, value = request["ifNoneExist"].removeprefix("identifier=").split("|", 1)
        identifiers = entry["resource"].get("identifier", []) + (
            [entry["resource"]["masterIdentifier"]] if "masterIdentifier" in entry["resource"]
            else [])
        assert {"system": system, "value": value} in [
            {"system": i["system"], "value": i["value"]} for i in identifiers]


def check_observations(bundle: dict, results: list[dict], numeric_types: tuple[str, ...],
                       type_key: str) -> None:
    observations = resources(bundle, "Observation")
    assert len(observations) == len(results)
    for observation, result in zip(observations, results, strict=True):
        assert observation["code"]["coding"][0]["code"] == result["code"]
        value = result["value"].replace(",", ".")
        if "valueQuantity" in observation:
            assert result[type_key] in numeric_types
            assert observation["valueQuantity"]["value"] == float(value)
        elif "valueCodeableConcept" in observation:
            assert observation["valueCodeableConcept"]["coding"][0]["code"] == result["value_code"]
        else:
            assert observation["valueString"] == result["value"]
        codes = [c["code"] for i in observation.get("interpretation", []) for c in i["coding"]]
        assert codes == ([result["flag"]] if result["flag"] else [])
        if observation.get("interpretation"):
            assert observation["interpretation"][0]["coding"][0]["system"] == INTERPRETATION


@pytest.mark.parametrize("name", ["hprnet_01_abnormal", "hprnet_02_multi", "hprnet_03_cp1252"])
def test_hprim_net_bundles(name: str):
    parsed = parse_hprim_net(sample_bytes(f"{name}.hpr"))
    for record, want in zip(parsed.records, expected(name)["records"], strict=True):
        bundle = bundle_from_hprim_net(record)
        check_bundle(bundle)
        (patient,) = resources(bundle, "Patient")
        assert patient["name"][0]["family"] == want["patient"]["last_name"]
        assert patient["birthDate"] == want["patient"]["birth_date"]
        assert all("1.2.250.1.213.1.4.8" not in i["system"] for i in patient["identifier"])
        check_observations(bundle, want["results"], ("N",), "type")
        (report,) = resources(bundle, "DiagnosticReport")
        assert len(report["result"]) == len(want["results"])
        assert bundle_from_hprim_net(record) == bundle  # deterministic: a retry is identical


@pytest.mark.parametrize("name", ["hps_01_simple", "hps_02_multi", "hps_03_latin1_continuation"])
def test_hprim_sante_bundles(name: str):
    parsed = parse_hprim_sante(sample_bytes(f"{name}.hps"))
    for patient, want in zip(parsed.patients, expected(name)["patients"], strict=True):
        bundle = bundle_from_hprim_sante(parsed, patient)
        check_bundle(bundle)
        results = [r for request in want["requests"] for r in request["results"]]
        check_observations(bundle, results, ("NM",), "value_type")
        reports = resources(bundle, "DiagnosticReport")
        assert [r["identifier"][0]["value"] for r in reports] == [
            q["filler_id"] for q in want["requests"]]
        for observation, result in zip(resources(bundle, "Observation"), results, strict=True):
            if result["low"] is not None and result["high"] is not None:
                reference = observation["referenceRange"][0]
                assert reference["low"]["value"] == float(result["low"].replace(",", "."))
            assert observation["effectiveDateTime"].startswith(result["datetime"])
            assert observation["effectiveDateTime"].endswith("+01:00")


def test_qualified_ins_identifier():
    record = parse_hprim_net(sample_bytes("hprnet_01_abnormal.hpr")).records[0]
    bundle = bundle_from_hprim_net(record, QualifiedIns("248022612345607"))
    check_bundle(bundle)
    patient_entry = bundle["entry"][0]
    ins = patient_entry["resource"]["identifier"][0]
    assert ins["system"] == "urn:oid:1.2.250.1.213.1.4.8" and ins["value"] == "248022612345607"
    assert ins["type"]["coding"][0]["code"] == "INS-NIR"
    assert patient_entry["request"]["ifNoneExist"] == (
        "identifier=urn:oid:1.2.250.1.213.1.4.8|248022612345607")


@pytest.mark.parametrize("name", ["dlu_01_full", "dlu_02_minimal"])
def test_cda_document_reference(name: str):
    data = sample_bytes(f"{name}.xml")
    header, _ = parse_cda_header(data)
    bundle = bundle_from_cda(data, header, format_code="urn:asip:ci-sis:dlu:2015")
    check_bundle(bundle)
    want = expected(name)
    (document,) = resources(bundle, "DocumentReference")
    assert document["type"]["coding"][0] == {"system": "http://loinc.org", "code": "74207-2",
                                             "display": "Document de liaison d'urgence"}
    assert base64.b64decode(document["content"][0]["attachment"]["data"]) == data
    assert document["masterIdentifier"]["value"] == want["document"]["id"]
    (patient,) = resources(bundle, "Patient")
    assert patient["identifier"][0]["value"] == want["patient"]["ins"]
    unqualified = bundle_from_cda(data, header, ins_qualified=False)
    check_bundle(unqualified)
    assert resources(unqualified, "Patient")[0]["identifier"][0]["value"] == want["patient"]["ipp"]


def test_datetimes():
    assert fhir_datetime("2026-03-12") == "2026-03-12"
    assert fhir_datetime("2026-07-12T10:10") == "2026-07-12T10:10:00+02:00"
    assert fhir_datetime("20260310143000+0100") == "2026-03-10T14:30:00+01:00"
    assert fhir_datetime("19480214") == "1948-02-14"
    assert fhir_datetime("nonsense") is None and fhir_datetime(None) is None
