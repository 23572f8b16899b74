"""FHIR R4 transaction Bundles for DUI/LGC servers: sans-IO serialisers.

- ``bundle_from_hprim_net`` / ``bundle_from_hprim_sante``: a Patient, a DiagnosticReport
  per request and an Observation per result (formats notes §6): ``valueQuantity`` only
  when the value reads as a number (``4,8`` too), else ``valueString`` (or
  ``valueCodeableConcept`` for an HPRIM Santé CE value); ``referenceRange`` low/high;
  ``interpretation`` from the HL7 v3-ObservationInterpretation code system, whose codes
  are the HPRIM flags (``L H LL HH A AA LU HU N < >``).
- ``bundle_from_cda``: a Patient and a DocumentReference (type = the LOINC
  ``ClinicalDocument/code``, the CDA as a base64 attachment, masterIdentifier = its id).

Every entry is a conditional create (``request.ifNoneExist = identifier=system|value``,
FHIR R4 §3.1.0.8.1): posting the same Bundle twice creates nothing the second time,
which is what makes the FHIR target idempotent across retries. The Patient carries the
FR Core INS identifier (``urn:oid:1.2.250.1.213.1.4.8``, type ``INS-NIR``) only when the
caller says the identity is qualified.

Local HPRIM codes have no public system; they are named under ``urn:mss:hprim:<sender>``
so that codes of two labs never collide. Times without a zone are Europe/Paris (the
HPRIM convention) and are written with their offset, as FHIR ``dateTime`` with a time
requires.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import re
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from .cda_dlu import CdaHeader
from .hl7v2 import QualifiedIns
from .hprim_net import HprimNetRecord
from .hprim_sante import HprimSanteFile, HprimSantePatient

INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
INTERPRETATION_CODES = frozenset({"L", "H", "LL", "HH", "A", "AA", "LU", "HU", "N", "<", ">"})
FR_CORE_IDENTIFIER_TYPE = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
HL7_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
LOINC = "http://loinc.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INS_TYPES = {"1.2.250.1.213.1.4.8": "INS-NIR", "1.2.250.1.213.1.4.9": "INS-NIA",
             "1.2.250.1.213.1.4.10": "INS-NIR-TEST", "1.2.250.1.213.1.4.11": "INS-NIR-DEMO"}
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)$")
_NAMESPACE = uuid.UUID("6f0c6a52-2a7d-4d0e-9a39-5b0f0c5f2e11")
_PARIS = ZoneInfo("Europe/Paris")
_STATUS = {"F": "final", "P": "preliminary", "C": "corrected", "I": "registered",
           "D": "entered-in-error", "X": "cancelled"}
_GENDER = {"M": "male", "F": "female", "U": "unknown", "O": "other"}


def _full_url(*parts: str) -> str:
    # Deterministic ids: the same input gives the same Bundle (and the same retry).
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '|'.join(parts))}"


def _number(value: str) -> float | int | None:
    text = value.strip()
    if not _NUMBER.match(text):
        return None
    text = text.replace(",", ".")
    if text.startswith("."):
        text = "0" + text
    return float(text) if "." in text else int(text)


def fhir_datetime(value: str | None) -> str | None:
    """HPRIM ``YYYY-MM-DD[THH:MM[:SS]]`` (no zone) or CDA ``YYYYMMDDHHMMSS[+ZZZZ]`` ->
    FHIR ``dateTime``: a date alone stays a date; a time gets seconds and an offset."""
    if not value:
        return None
    if re.match(r"^\d{8,14}([+-]\d{4})?$", value):
        digits, _, _ = value.partition("+") if "+" in value else value.partition("-")
        zone = value[len(digits):]
        if len(digits) == 8:
            return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
        padded = digits.ljust(14, "0")
        iso = (f"{padded[:4]}-{padded[4:6]}-{padded[6:8]}T{padded[8:10]}:{padded[10:12]}:"
               f"{padded[12:14]}")
        if zone:
            return f"{iso}{zone[:3]}:{zone[3:]}"
        value = iso
    try:
        parsed = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if len(value) == 10:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_PARIS)
    return parsed.isoformat()


def _entry(full_url: str, resource: dict[str, Any], system: str, value: str) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"],
                        "ifNoneExist": f"identifier={system}|{value}"}}


def _patient(local_system: str, local_id: str, family: str, given: str,
             birth_date: str | None, sex: str | None, address: dict[str, Any] | None,
             ins: QualifiedIns | None, birth_name: str | None = None
             ) -> tuple[str, dict[str, Any], str, str]:
    identifiers: list[dict[str, Any]] = []
    if ins is not None:
        identifiers.append({
            "use": "official",
            "type": {"coding": [{"system": FR_CORE_IDENTIFIER_TYPE,
                                 "code": INS_TYPES.get(ins.oid, "INS-NIR")}]},
            "system": f"urn:oid:{ins.oid}", "value": ins.matricule})
    if local_id:
        identifiers.append({"use": "usual",
                            "type": {"coding": [{"system": HL7_IDENTIFIER_TYPE, "code": "PI"}]},
                            "system": local_system, "value": local_id})
    if not identifiers:
        # No id at all (an HPRIM header with an empty line 1): a stable key from the
        # identity traits, so the conditional create still finds the same patient.
        digest = hashlib.sha256(f"{family}|{given}|{birth_date}".encode()).hexdigest()[:20]
        identifiers.append({"use": "secondary", "system": f"{local_system}-traits",
                            "value": digest})
    key = identifiers[0]
    names: list[dict[str, Any]] = [{"use": "usual", "family": family,
                                    **({"given": [given]} if given else {})}]
    if birth_name and birth_name != family:
        names.append({"use": "official", "family": birth_name,
                      **({"given": [given]} if given else {})})
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers,
                                "name": names}
    if sex and sex.upper() in _GENDER:
        resource["gender"] = _GENDER[sex.upper()]
    if birth_date:
        resource["birthDate"] = fhir_datetime(birth_date)
    if address:
        resource["address"] = [address]
    url = _full_url("Patient", key["system"], key["value"])
    return url, resource, key["system"], key["value"]


def _address(lines: list[str], city: str, postcode: str) -> dict[str, Any] | None:
    kept = [line for line in lines if line]
    address: dict[str, Any] = {}
    if kept:
        address["line"] = kept
    if city:
        address["city"] = city
    if postcode:
        address["postalCode"] = postcode
    return address or None


def _observation(patient_url: str, system: str, request_key: str, seq: int, code: str,
                 label: str, value: str, unit: str, low: str | None, high: str | None,
                 flag: str, status: str, when: str | None,
                 coded: tuple[str, str] | None = None, numeric: bool = True
                 ) -> tuple[str, dict[str, Any], str, str]:
    identifier_system = f"{system}:result"
    identifier_value = f"{request_key}/{seq}/{code}"
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": identifier_system, "value": identifier_value}],
        "status": _STATUS.get(status, "final"),
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": f"{system}:code", "code": code or "UNKNOWN",
                             **({"display": label} if label else {})}],
                 **({"text": label} if label else {})},
        "subject": {"reference": patient_url}}
    if when:
        resource["effectiveDateTime"] = when
    number = _number(value) if numeric else None
    if coded is not None:
        resource["valueCodeableConcept"] = {
            "coding": [{"system": f"{system}:code", "code": coded[0] or "UNKNOWN",
                        **({"display": coded[1]} if coded[1] else {})}],
            **({"text": coded[1]} if coded[1] else {})}
    elif number is not None:
        resource["valueQuantity"] = {"value": number, **({"unit": unit} if unit else {})}
    elif value:
        resource["valueString"] = value
    reference: dict[str, Any] = {}
    for name, bound in (("low", low), ("high", high)):
        bound_number = _number(bound or "")
        if bound_number is not None:
            reference[name] = {"value": bound_number, **({"unit": unit} if unit else {})}
    if reference:
        resource["referenceRange"] = [reference]
    if flag in INTERPRETATION_CODES:
        resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": flag}]}]
    url = _full_url("Observation", identifier_system, identifier_value)
    return url, resource, identifier_system, identifier_value


def _report(patient_url: str, system: str, request_key: str, results: list[str],
            statuses: set[str], when: str | None, code: tuple[str, str, str]
            ) -> tuple[str, dict[str, Any], str, str]:
    identifier_system = f"{system}:request"
    status = "final" if statuses <= {"F", ""} else (
        "partial" if "P" in statuses else _STATUS.get(sorted(statuses)[0], "final"))
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": identifier_system, "value": request_key}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "LAB"}]}],
        "code": {"coding": [{"system": code[2], "code": code[0], "display": code[1]}],
                 "text": code[1]},
        "subject": {"reference": patient_url},
        "result": [{"reference": url} for url in results]}
    if when:
        resource["effectiveDateTime"] = when
    url = _full_url("DiagnosticReport", identifier_system, request_key)
    return url, resource, identifier_system, request_key


def _bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


LAB_REPORT = ("11502-2", "Laboratory report", LOINC)


def bundle_from_hprim_net(record: HprimNetRecord, ins: QualifiedIns | None = None
                          ) -> dict[str, Any]:
    """One HPRIM Net record as a transaction Bundle (a dict, ready for ``json.dumps``)."""
    system = f"urn:mss:hprim:{record.sender.code or 'unknown'}"
    patient = record.patient
    patient_url, patient_resource, psys, pval = _patient(
        f"{system}:patient", patient.id, patient.last_name, patient.first_name,
        patient.birth_date, None,
        _address([patient.address1, patient.address2], patient.city, patient.postcode), ins)
    entries = [_entry(patient_url, patient_resource, psys, pval)]
    when = fhir_datetime(record.request_date)
    request_key = record.request_id or f"line-{record.start_line}"
    result_urls = []
    for seq, result in enumerate(record.results, 1):
        url, resource, isys, ival = _observation(
            patient_url, system, request_key, seq, result.code, result.label, result.value,
            result.unit, result.low, result.high, result.flag, result.status, when,
            numeric=result.type in ("N", ""))
        result_urls.append(url)
        entries.append(_entry(url, resource, isys, ival))
    url, report, rsys, rval = _report(patient_url, system, request_key, result_urls,
                                      {r.status for r in record.results}, when, LAB_REPORT)
    if record.body_text.strip():
        report["conclusion"] = record.body_text.strip()
    entries.insert(1, _entry(url, report, rsys, rval))
    return _bundle(entries)


def bundle_from_hprim_sante(hprim: HprimSanteFile, patient: HprimSantePatient,
                            ins: QualifiedIns | None = None) -> dict[str, Any]:
    """One patient of an HPRIM Santé file as a transaction Bundle."""
    system = f"urn:mss:hprim:{hprim.header.sender_id or 'unknown'}"
    address = patient.address
    local = patient.id_lab or patient.id_prescriber
    patient_url, patient_resource, psys, pval = _patient(
        f"{system}:patient", local, patient.last_name, patient.first_name,
        patient.birth_date, patient.sex,
        _address([address.street, address.street2], address.city, address.postcode), ins,
        birth_name=patient.birth_name)
    entries = [_entry(patient_url, patient_resource, psys, pval)]
    for number, request in enumerate(patient.requests, 1):
        request_key = request.filler_id or request.placer_id or f"line-{request.line}"
        result_urls = []
        for seq, result in enumerate(request.results, 1):
            coded = ((result.value_code or "", result.value_label or "")
                     if result.value_type == "CE" else None)
            when = fhir_datetime(result.datetime or request.collection_datetime)
            url, resource, isys, ival = _observation(
                patient_url, system, request_key, seq, result.code, result.label,
                result.value, result.unit, result.low, result.high, result.flag,
                result.status, when, coded, numeric=result.value_type in ("NM", ""))
            if result.comments:
                resource["note"] = [{"text": c} for c in result.comments]
            result_urls.append(url)
            entries.append(_entry(url, resource, isys, ival))
        test = request.tests[0] if request.tests else None
        code = (test.code, test.label, f"{system}:code") if test else LAB_REPORT
        url, report, rsys, rval = _report(
            patient_url, system, request_key, result_urls,
            {r.status for r in request.results}, fhir_datetime(request.collection_datetime),
            code)
        if request.comments:
            report["conclusion"] = "\n".join(request.comments)
        entries.insert(number, _entry(url, report, rsys, rval))
    return _bundle(entries)


def bundle_from_cda(document: bytes, header: CdaHeader, ins_qualified: bool = True,
                    format_code: str | None = None) -> dict[str, Any]:
    """A CDA document (a DLU...) as Patient + DocumentReference."""
    patient = header.patient
    ins = (QualifiedIns(patient.ins, patient.ins_oid)
           if ins_qualified and patient.ins and patient.ins_oid else None)
    patient_url, patient_resource, psys, pval = _patient(
        f"urn:oid:{patient.ipp_oid}" if patient.ipp_oid else "urn:mss:cda:patient",
        patient.ipp or "", patient.family, patient.given, fhir_datetime(patient.birth_date),
        patient.sex, _address([patient.street], patient.city, patient.postcode), ins,
        birth_name=patient.birth_name)
    if header.id_extension:
        master = {"system": f"urn:oid:{header.id_root}", "value": header.id_extension}
    else:
        master = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{header.id_root}"}
    attachment: dict[str, Any] = {"contentType": "text/xml",
                                  "data": base64.b64encode(document).decode("ascii")}
    if header.title:
        attachment["title"] = header.title
    content: dict[str, Any] = {"attachment": attachment}
    if format_code:
        content["format"] = {"system": "urn:oid:1.3.6.1.4.1.19376.1.2.3", "code": format_code}
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference", "masterIdentifier": master, "status": "current",
        "type": {"coding": [{"system": LOINC, "code": header.code or "",
                             **({"display": header.code_display}
                                if header.code_display else {})}]},
        "subject": {"reference": patient_url}, "content": [content]}
    when = fhir_datetime(header.effective_time)
    if when and "T" in when:
        resource["date"] = when
    if header.author is not None and (header.author.family or header.author.given):
        resource["author"] = [{"display": f"{header.author.given} {header.author.family}"
                               .strip()}]
    url = _full_url("DocumentReference", master["system"], master["value"])
    return _bundle([_entry(patient_url, patient_resource, psys, pval),
                    _entry(url, resource, master["system"], master["value"])])
