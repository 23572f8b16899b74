"""From a parsed part to its results-index entry (`mssmail.store.results`): what the
webmail's "Récupération Hprim" shows of it. Sans-IO; the worker stores the entries."""

from __future__ import annotations

from connectors.formats.summary import ContentPart
from mssmail.store.results import ResultEntry, ResultLine, ResultTable


def entry_for(part: ContentPart, *, file_index: int, source: str, filename: str, container: str) -> ResultEntry:
    """The entry of one part (an HPRIM Net record, an HPRIM Santé patient, a CDA
    document). The INS is kept only where `connectors.formats` found a qualified one
    (CDA/XDM); an HPRIM Net insured NIR stays an NIR."""
    patient = part.patient
    tables = tuple(ResultTable(t.title, t.date, tuple(
        ResultLine(r.label, r.value, r.unit, r.low, r.high, r.flag, r.abnormal, r.off_scale, r.line)
        for r in t.rows)) for t in part.requests)
    return ResultEntry(
        part=source, file_index=file_index, part_index=part.index, kind=part.kind, family=patient.family,
        given=patient.given, birth_date=patient.birth_date, sex=patient.sex, ins=patient.ins,
        ins_oid=patient.ins_oid, insured_nir=patient.insured_nir, lab=part.sender, document_date=part.date,
        result_count=part.result_count, abnormal_count=part.abnormal_count, tables=tables, container=container,
        filename=filename)
