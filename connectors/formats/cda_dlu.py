"""CDA R2 documents, and the DLU (Document de Liaison d'Urgence) in particular:
``parse_cda_dlu(bytes)``, ``parse_cda_header(bytes)``.

The DLU is the CI-SIS "DLU-EHPAD" model: ``ClinicalDocument/templateId``
``1.2.250.1.213.1.1.1.22`` and LOINC code ``74207-2`` (the 2018/2021 models used
``34133-9``: accepted with a warning). Sections are found by templateId, never by
title or position (CI-SIS DLU-EHPAD 2022.01 schematrons). Content comes from each
section's narrative ``<text>``: ``<list><item>`` gives a list of strings, a
``<table>`` its body rows, ``<paragraph>`` a string.

The personne de confiance is ``informant/relatedEntity`` (ANS FRCDAInformant: role in
``@classCode``, link to the patient in ``code`` from JDV_J11-RelationPatient-CISIS),
with ``participant[@typeCode='IND']/associatedEntity`` as the older senders' fallback.
The médecin traitant is ``participant[@typeCode='INF']`` with functionCode ``PCP``.

Pure function over bytes (lxml with DTD, entities and network disabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from .errors import ParseError
from .nir import ins_warnings, nir_birth_month
from .xmlsafe import parse_xml

KIND = "cda_dlu"
NS = {"h": "urn:hl7-org:v3"}
DLU_TEMPLATE = "1.2.250.1.213.1.1.1.22"
DLU_CODE = "74207-2"
DLU_LEGACY_CODE = "34133-9"
LOINC = "2.16.840.1.113883.6.1"
# INS assigning authorities (CI-SIS INS annex): INS-NIR, INS-NIA, and the test/demo OIDs.
INS_OIDS = ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10",
            "1.2.250.1.213.1.4.11")
# The INS-NIA (.4.9) is a temporary number for people born abroad, not built like a NIR.
NIR_BASED_INS_OIDS = ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11")
IDNAT_PS_OID = "1.2.250.1.71.4.2.1"
_PCC = "1.3.6.1.4.1.19376.1.5.3"
# DLU section templateIds (CI-SIS DLU-EHPAD 2022.01) and the key each one fills.
DLU_SECTIONS: tuple[tuple[str, str], ...] = (
    (f"{_PCC}.1.1.13.2.10", "disposition"),
    (f"{_PCC}.1.3.6", "active_problems"),
    (f"{_PCC}.1.3.8", "history"),
    (f"{_PCC}.1.3.13", "allergies"),
    (f"{_PCC}.1.3.19", "treatments"),
    (f"{_PCC}.1.3.35", "advance_directives"),
    ("1.3.6.1.4.1.19376.1.7.3.1.1.13.7", "event_outcomes"),
    (f"{_PCC}.1.3.28", "bmr"),
    (f"{_PCC}.1.3.23", "vaccinations"),
    ("1.2.250.1.213.1.1.2.37", "attached_documents"),
    ("1.3.6.1.4.1.19376.1.4.1.2.16", "comment"),
)
_SECTION_KEYS = dict(DLU_SECTIONS)

SectionContent = str | list[str] | list[list[str]] | None


def _attr(element: etree._Element | None, path: str, name: str) -> str | None:
    if element is None:
        return None
    found = element.find(path, NS) if path else element
    if found is None:
        return None
    value = found.get(name)
    return value.strip() if value is not None else None


def _text(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return " ".join("".join(element.itertext()).split())


def _first(element: etree._Element | None, path: str) -> etree._Element | None:
    return None if element is None else element.find(path, NS)


@dataclass(frozen=True, slots=True)
class Person:
    """A named person of the header (author, médecin traitant, personne de confiance)."""

    family: str
    given: str
    idnat_ps: str | None = None
    phone: str | None = None
    relation: str | None = None
    relation_code: str | None = None


@dataclass(frozen=True, slots=True)
class CdaPatient:
    ins: str | None
    ins_oid: str | None
    ipp: str | None
    ipp_oid: str | None
    family: str
    birth_name: str
    given: str
    sex: str | None
    birth_date: str | None
    street: str
    postcode: str
    city: str
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {"ins": self.ins, "ins_oid": self.ins_oid, "ipp": self.ipp,
                "ipp_oid": self.ipp_oid, "family": self.family, "birth_name": self.birth_name,
                "given": self.given, "sex": self.sex, "birth_date": self.birth_date,
                "address": {"street": self.street, "postcode": self.postcode,
                            "city": self.city}}


@dataclass(frozen=True, slots=True)
class CdaHeader:
    """What every CDA R2 header gives a connector (any document type)."""

    id_root: str | None
    id_extension: str | None
    set_id: str | None
    version: str | None
    code: str | None
    code_system: str | None
    code_display: str | None
    template_ids: tuple[str, ...]
    title: str
    effective_time: str | None
    service_start: str | None
    patient: CdaPatient
    author: Person | None
    custodian_id: str | None
    custodian_name: str | None
    parent_root: str | None = None  # relatedDocument[@typeCode='RPLC']: what this replaces
    parent_extension: str | None = None

    @property
    def unique_id(self) -> str | None:
        """``root^extension`` (or the root alone): the XDS uniqueId of the document
        (IHE ITI TF-3 §4.2.3.2.26)."""
        if not self.id_root:
            return None
        return f"{self.id_root}^{self.id_extension}" if self.id_extension else self.id_root

    @property
    def is_dlu(self) -> bool:
        return DLU_TEMPLATE in self.template_ids or self.code in (DLU_CODE, DLU_LEGACY_CODE)

    def document_dict(self) -> dict[str, Any]:
        return {"id_root": self.id_root, "id": self.id_extension, "set_id": self.set_id,
                "version": self.version, "code": self.code, "code_system": self.code_system,
                "template_ids": list(self.template_ids), "title": self.title,
                "effective_time": self.effective_time, "service_start": self.service_start}

    def to_dict(self) -> dict[str, Any]:
        return {"format": "cda", "document": self.document_dict(),
                "patient": self.patient.to_dict(),
                "author": _author_dict(self.author),
                "custodian": {"id": self.custodian_id, "name": self.custodian_name}}


def _author_dict(person: Person | None) -> dict[str, Any] | None:
    if person is None:
        return None
    return {"idnat_ps": person.idnat_ps, "family": person.family, "given": person.given}


@dataclass(frozen=True, slots=True)
class Dlu:
    header: CdaHeader
    attending_physician: Person | None
    trusted_person: Person | None
    sections_present: tuple[str, ...]
    sections: tuple[tuple[str, SectionContent], ...]  # (key, content) for every DLU key
    warnings: tuple[str, ...]

    kind = KIND

    def section(self, key: str) -> SectionContent:
        return dict(self.sections).get(key)

    def to_dict(self) -> dict[str, Any]:
        header = self.header
        attending = self.attending_physician
        trusted = self.trusted_person
        out: dict[str, Any] = {
            "format": KIND, "document": header.document_dict(),
            "patient": header.patient.to_dict(), "author": _author_dict(header.author),
            "custodian": {"id": header.custodian_id, "name": header.custodian_name},
            "attending_physician": None if attending is None else {
                "idnat_ps": attending.idnat_ps, "family": attending.family,
                "given": attending.given, "phone": attending.phone},
            "trusted_person": None if trusted is None else {
                "family": trusted.family, "given": trusted.given,
                "relation": trusted.relation, "relation_code": trusted.relation_code,
                "phone": trusted.phone},
            "sections_present": list(self.sections_present)}
        out.update(dict(self.sections))
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _name(element: etree._Element | None) -> tuple[str, str]:
    """(family, given) of the first ``name`` under ``element``."""
    name = _first(element, "h:name")
    if name is None:
        return "", ""
    return _text(_first(name, "h:family")), _text(_first(name, "h:given"))


def _phone(entity: etree._Element | None) -> str | None:
    if entity is None:
        return None
    for telecom in entity.findall("h:telecom", NS):
        value = (telecom.get("value") or "").strip()
        if value.lower().startswith("tel:"):
            return value[4:]
    return None


def _patient(root: etree._Element, warnings: list[str]) -> CdaPatient:
    role = root.find("h:recordTarget/h:patientRole", NS)
    if role is None:
        raise ParseError(KIND, root.sourceline, "recordTarget",
                         "no recordTarget/patientRole: the document names no patient")
    ins = ins_oid = ipp = ipp_oid = None
    for ident in role.findall("h:id", NS):
        root_oid = (ident.get("root") or "").strip()
        extension = (ident.get("extension") or "").strip() or None
        if root_oid in INS_OIDS and ins is None:
            ins, ins_oid = extension, root_oid
        elif ipp is None and extension:
            ipp, ipp_oid = extension, root_oid
    person = role.find("h:patient", NS)
    birth_date = _attr(person, "h:birthTime", "value")
    if ins:
        where = f"line {role.sourceline}, patientRole/id (INS)"
        warnings.extend(ins_warnings(ins, where))
        month = nir_birth_month(ins)
        if (ins_oid in NIR_BASED_INS_OIDS and month is not None and birth_date
                and (birth_date[4:6].isascii() and birth_date[4:6].isdigit()) and int(birth_date[4:6]) != month):
            warnings.append(f"{where}: NIR month {month:02d} is not the birth month "
                            f"{birth_date[4:6]}")
    name = _first(person, "h:name")
    family = birth_name = ""
    families = name.findall("h:family", NS) if name is not None else []
    for element in families:
        qualifier = (element.get("qualifier") or "").upper()
        if qualifier == "SP" or (not qualifier and not family):
            family = _text(element)
        if qualifier == "BR":
            birth_name = _text(element)
    if not family and families:
        family = _text(families[0])
    given = _text(_first(name, "h:given")) if name is not None else ""
    addr = role.find("h:addr", NS)
    return CdaPatient(
        ins=ins, ins_oid=ins_oid, ipp=ipp, ipp_oid=ipp_oid, family=family,
        birth_name=birth_name or family, given=given,
        sex=_attr(person, "h:administrativeGenderCode", "code"),
        birth_date=birth_date,
        street=_text(_first(addr, "h:streetAddressLine")),
        postcode=_text(_first(addr, "h:postalCode")), city=_text(_first(addr, "h:city")),
        line=role.sourceline or 0)


def _idnat_ps(entity: etree._Element | None) -> str | None:
    if entity is None:
        return None
    for ident in entity.findall("h:id", NS):
        if (ident.get("root") or "").strip() == IDNAT_PS_OID:
            return (ident.get("extension") or "").strip() or None
    return None


def _read_header(root: etree._Element, warnings: list[str]) -> CdaHeader:
    qname = etree.QName(root)
    if qname.localname != "ClinicalDocument" or qname.namespace != NS["h"]:
        raise ParseError(KIND, root.sourceline, "ClinicalDocument",
                         "not a CDA R2 document (root element must be "
                         "{urn:hl7-org:v3}ClinicalDocument)")
    author = root.find("h:author/h:assignedAuthor", NS)
    author_person = None
    if author is not None:
        family, given = _name(author.find("h:assignedPerson", NS))
        author_person = Person(family=family, given=given, idnat_ps=_idnat_ps(author))
    custodian = root.find("h:custodian/h:assignedCustodian/h:representedCustodianOrganization",
                          NS)
    parent = root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument", NS)
    return CdaHeader(
        id_root=_attr(root, "h:id", "root"), id_extension=_attr(root, "h:id", "extension"),
        set_id=_attr(root, "h:setId", "extension") or _attr(root, "h:setId", "root"),
        version=_attr(root, "h:versionNumber", "value"), code=_attr(root, "h:code", "code"),
        code_system=_attr(root, "h:code", "codeSystem"),
        code_display=_attr(root, "h:code", "displayName"),
        template_ids=tuple((t.get("root") or "").strip()
                           for t in root.findall("h:templateId", NS)),
        title=_text(root.find("h:title", NS)),
        effective_time=_attr(root, "h:effectiveTime", "value"),
        service_start=_attr(root, "h:documentationOf/h:serviceEvent/h:effectiveTime/h:low",
                            "value"),
        patient=_patient(root, warnings), author=author_person,
        custodian_id=_attr(custodian, "h:id", "extension"),
        custodian_name=_text(_first(custodian, "h:name")) or None,
        parent_root=_attr(parent, "h:id", "root"), parent_extension=_attr(parent, "h:id",
                                                                          "extension"))


def parse_cda_header(data: bytes) -> tuple[CdaHeader, tuple[str, ...]]:
    """The header of any CDA R2 document, and warnings (for MDM/FHIR outputs and XDM)."""
    warnings: list[str] = []
    root = parse_xml(data, KIND, "CDA document")
    return _read_header(root, warnings), tuple(warnings)


def _narrative(section: etree._Element) -> SectionContent:
    text = section.find("h:text", NS)
    if text is None:
        return None
    items = text.findall(".//h:list/h:item", NS)
    if items:
        return [_text(item) for item in items]
    table = text.find(".//h:table", NS)
    if table is not None:
        rows = table.findall("h:tbody/h:tr", NS) or [
            row for row in table.findall(".//h:tr", NS) if row.find("h:td", NS) is not None]
        return [[_text(cell) for cell in row.findall("h:td", NS)] for row in rows]
    paragraphs = text.findall(".//h:paragraph", NS)
    if paragraphs:
        return "\n".join(_text(p) for p in paragraphs)
    flat = _text(text)
    return flat or None


def _trusted_person(root: etree._Element) -> Person | None:
    entity = root.find("h:informant/h:relatedEntity", NS)
    person = _first(entity, "h:relatedPerson")
    if entity is None:
        entity = root.find("h:participant[@typeCode='IND']/h:associatedEntity", NS)
        person = _first(entity, "h:associatedPerson")
    if entity is None:
        return None
    family, given = _name(person)
    return Person(family=family, given=given, phone=_phone(entity),
                  relation=_attr(entity, "h:code", "displayName"),
                  relation_code=_attr(entity, "h:code", "code"))


def _attending_physician(root: etree._Element) -> Person | None:
    for participant in root.findall("h:participant[@typeCode='INF']", NS):
        if _attr(participant, "h:functionCode", "code") != "PCP":
            continue
        entity = participant.find("h:associatedEntity", NS)
        family, given = _name(_first(entity, "h:associatedPerson"))
        return Person(family=family, given=given, idnat_ps=_idnat_ps(entity),
                      phone=_phone(entity))
    return None


def parse_cda_dlu(data: bytes) -> Dlu:
    """Parse a DLU; ParseError if the bytes are not a CDA R2 DLU."""
    warnings: list[str] = []
    root = parse_xml(data, KIND, "CDA document")
    header = _read_header(root, warnings)
    if DLU_TEMPLATE not in header.template_ids:
        raise ParseError(KIND, root.sourceline, "ClinicalDocument/templateId",
                         f"not a DLU: templateId {DLU_TEMPLATE} absent")
    if header.code == DLU_LEGACY_CODE:
        warnings.append(f"ClinicalDocument/code {DLU_LEGACY_CODE} is the pre-2022 DLU code "
                        f"({DLU_CODE} expected)")
    elif header.code != DLU_CODE:
        raise ParseError(KIND, root.sourceline, "ClinicalDocument/code",
                         f"not a DLU: code {header.code!r}, {DLU_CODE} expected")
    present: list[str] = []
    contents: dict[str, SectionContent] = {}
    for section in root.iterfind("h:component/h:structuredBody/h:component/h:section", NS):
        for template in section.findall("h:templateId", NS):
            template_id = (template.get("root") or "").strip()
            key = _SECTION_KEYS.get(template_id)
            if key is None:
                continue
            if key in contents:
                warnings.append(f"line {section.sourceline}: second section {template_id}; "
                                "the first one is kept")
                break
            present.append(template_id)
            contents[key] = _narrative(section)
            break
    return Dlu(header=header, attending_physician=_attending_physician(root),
               trusted_person=_trusted_person(root), sections_present=tuple(present),
               sections=tuple((key, contents.get(key)) for _, key in DLU_SECTIONS),
               warnings=tuple(warnings))
