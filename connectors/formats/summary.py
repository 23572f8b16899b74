"""One routing view over every parser's result: the parts a message's file holds.

A router needs, per part (an HPRIM Net record, an HPRIM Santé patient, an XDM or plain
CDA document): the content kind it matches rules on (``hprim_net``, ``hprim_sante``,
``cda:<LOINC>``), who the patient is (with the INS only where the format can carry a
qualified one), the sender, the date, how many results and how many abnormal, and the
physical lines of the results (for the index "Récupération Hprim" lists and for error
reports). ``parts(result)`` gives that without the router knowing each format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cda_dlu import CdaHeader, Dlu
from .hprim_net import HprimNetFile
from .hprim_sante import HprimSanteFile
from .xdm import XdmPackage


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    family: str
    given: str
    birth_date: str | None  # ISO YYYY-MM-DD
    sex: str | None
    local_id: str | None
    ins: str | None  # only from a CDA / XDM (the sender asserts a qualified identity)
    ins_oid: str | None
    insured_nir: str | None  # HPRIM Net line 8: the insured person's NIR, never an INS


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One result line as a reader sees it ("Récupération Hprim"): the analysis, the
    value as written (a string: "4,8", "<2"), its unit and reference range, the flag
    and what it means (`abnormal` None for an off-scale `<`/`>`), and its physical line."""

    label: str
    value: str
    unit: str
    low: str
    high: str
    flag: str
    abnormal: bool | None
    off_scale: str | None
    line: int


@dataclass(frozen=True, slots=True)
class RequestTable:
    """One request (HPRIM Net record, HPRIM Santé OBR) and its results, in file order."""

    title: str
    date: str | None  # ISO YYYY-MM-DD
    rows: tuple[ResultRow, ...]


@dataclass(frozen=True, slots=True)
class ContentPart:
    kind: str
    index: int  # 0-based position of the part in its file (record, patient, document)
    line: int  # first physical line (0 for a document inside an archive)
    patient: PatientIdentity
    sender: str
    date: str | None
    result_count: int
    abnormal_count: int
    result_lines: tuple[int, ...]
    document_id: str | None = None  # CDA root^extension
    requests: tuple[RequestTable, ...] = ()  # the result lines, one table per request


def _iso_date(value: str | None) -> str | None:
    if not value:
        return None
    digits = value.replace("-", "")[:8]
    if len(digits) == 8 and (digits.isascii() and digits.isdigit()):
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
    return None


def _cda_part(header: CdaHeader, index: int, line: int) -> ContentPart:
    patient = header.patient
    author = header.author
    return ContentPart(
        kind=f"cda:{header.code or 'unknown'}", index=index, line=line,
        patient=PatientIdentity(family=patient.family, given=patient.given,
                                birth_date=_iso_date(patient.birth_date), sex=patient.sex,
                                local_id=patient.ipp, ins=patient.ins, ins_oid=patient.ins_oid,
                                insured_nir=None),
        sender=header.custodian_name or (f"{author.given} {author.family}" if author else ""),
        date=_iso_date(header.effective_time), result_count=0, abnormal_count=0,
        result_lines=(), document_id=header.unique_id)


def _range(low: str | None, high: str | None, written: str = "") -> tuple[str, str]:
    if low or high:
        return low or "", high or ""
    return written, ""


def _net_table(record: Any) -> RequestTable:
    title = f"Demande {record.request_id}" if record.request_id else "Demande"
    return RequestTable(title=title, date=record.request_date, rows=tuple(
        ResultRow(label=r.label or r.code, value=r.value, unit=r.unit, low=r.low, high=r.high, flag=r.flag,
                  abnormal=r.abnormal, off_scale=r.off_scale, line=r.line) for r in record.results))


def _sante_table(request: Any) -> RequestTable:
    tests = ", ".join(t.label or t.code for t in request.tests if t.label or t.code)
    title = tests or (f"Demande {request.placer_id}" if request.placer_id else "Demande")
    rows = []
    for r in request.results:
        low, high = _range(r.low, r.high, r.range)
        rows.append(ResultRow(label=r.label or r.code, value=r.value_label or r.value, unit=r.unit, low=low,
                              high=high, flag=r.flag, abnormal=r.abnormal, off_scale=r.off_scale, line=r.line))
    return RequestTable(title=title, date=_iso_date(request.collection_datetime), rows=tuple(rows))


def parts(result: Any) -> tuple[ContentPart, ...]:
    """The routable parts of a parsed file (any of the four parsers' results)."""
    if isinstance(result, HprimNetFile):
        return tuple(
            ContentPart(
                kind="hprim_net", index=i, line=r.start_line,
                patient=PatientIdentity(
                    family=r.patient.last_name, given=r.patient.first_name,
                    birth_date=r.patient.birth_date, sex=None, local_id=r.patient.id or None,
                    ins=None, ins_oid=None, insured_nir=r.patient.nir or None),
                sender=r.sender.code, date=r.request_date, result_count=len(r.results),
                abnormal_count=r.abnormal_count,
                result_lines=tuple(x.line for x in r.results), requests=(_net_table(r),))
            for i, r in enumerate(result.records))
    if isinstance(result, HprimSanteFile):
        out = []
        for i, p in enumerate(result.patients):
            results = [x for q in p.requests for x in q.results]
            first = p.requests[0] if p.requests else None
            out.append(ContentPart(
                kind="hprim_sante", index=i, line=p.line,
                patient=PatientIdentity(family=p.last_name, given=p.first_name,
                                        birth_date=p.birth_date, sex=p.sex or None,
                                        local_id=p.id_lab or p.id_prescriber or None, ins=None,
                                        ins_oid=None, insured_nir=None),
                sender=result.header.sender_id,
                date=_iso_date(first.collection_datetime if first else result.header.datetime),
                result_count=len(results), abnormal_count=p.abnormal_count,
                result_lines=tuple(x.line for x in results),
                requests=tuple(_sante_table(q) for q in p.requests)))
        return tuple(out)
    if isinstance(result, Dlu):
        return (_cda_part(result.header, 0, 1),)
    if isinstance(result, CdaHeader):
        return (_cda_part(result, 0, 1),)
    if isinstance(result, XdmPackage):
        documents = [d for s in result.submission_sets for d in s.documents]
        out = []
        for i, document in enumerate(documents):
            content = document.content
            header = content.header if isinstance(content, Dlu) else content
            if isinstance(header, CdaHeader):
                out.append(_cda_part(header, i, 0))
        return tuple(out)
    raise TypeError(f"not a connector parse result: {type(result).__name__}")
