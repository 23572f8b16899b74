"""Codes 903, 904 and 905 decided by mss itself, for a rule with `require_ins=true`.

The ANS volet "Transmission de documents CDA par courriel MSSanté" (IG
ansforge/IG-hl7v2-volet-trans-lps-doc-cda-courriel-mss, page "error-codes", table
messageErrorCondition) gives the CONSOMMATEUR (the DPI/RIS that integrates the
document) the codes 902 "Identifiant patient inconnu", 903 "INS non présent dans le
document", 904 "L'INS transmis ne correspond pas exactement à celui stocké dans la base du
consommateur" and 905 "L'INS transmis n'est pas complet", sent back in ERR-3 of its ACK
and so in the acknowledgement MDN. A receiver that requires a qualified INS would answer
903/905 for a document mss can already judge from its own content, so a rule that says
so (`require_ins=true`) refuses it at routing with the same code, without a delivery:

- 903: the part carries no INS (an HPRIM file never does: its line-8 NIR is the
  insured person's, not an INS; a CDA without a patientRole/id under an INS OID).
- 905: an INS is there but not complete: not 15 characters (NIR + key), or for an
  INS-NIR (and its test OIDs) a key that does not match the NIR.
- 904 (the closest mss can tell of "does not match"): within one XDM, the INS of the
  metadata (the document entry's or submission set's patientId, IHE ITI TF-3 4.2.3.2.16)
  differs from the INS in the CDA header it carries.

902 (unknown patient) needs the consumer's patient base: only the receiver can say it.
Pure functions over the parsed content: no I/O.
"""

from __future__ import annotations

from typing import Any

from .cda_dlu import NIR_BASED_INS_OIDS, CdaHeader, Dlu
from .nir import ins_warnings
from .xdm import XdmPackage, split_patient_id

ABSENT, MISMATCH, INCOMPLETE = 903, 904, 905


def _header_ins(content: Any) -> tuple[str | None, str | None]:
    header = content.header if isinstance(content, Dlu) else content
    if isinstance(header, CdaHeader):
        return header.patient.ins, header.patient.ins_oid
    return None, None


def refusal(result: Any, part: Any) -> tuple[int, str] | None:
    """(code, reason) when the part cannot go to a receiver requiring a qualified INS;
    None when its INS is present, complete and consistent. `part` is a
    `summary.ContentPart` of `result`."""
    ins, oid = part.patient.ins, part.patient.ins_oid
    if isinstance(result, XdmPackage):
        documents = [(s, d) for s in result.submission_sets for d in s.documents]
        if part.index < len(documents):
            subset, document = documents[part.index]
            cda_ins, cda_oid = _header_ins(document.content)
            meta_ins, meta_oid = split_patient_id(document.patient_id or subset.patient_id)
            if cda_ins and meta_ins and (cda_ins, cda_oid) != (meta_ins, meta_oid):
                return MISMATCH, "the INS of the XDM metadata (patientId) differs from the CDA's"
            ins, oid = ins or cda_ins or meta_ins, oid or cda_oid or meta_oid
    if not ins:
        return ABSENT, f"no INS in the {part.kind} part (a qualified INS is required)"
    if not oid:
        return INCOMPLETE, "the INS has no assigning authority OID"
    if oid in NIR_BASED_INS_OIDS and ins_warnings(ins, "INS"):
        return INCOMPLETE, "the INS is not 15 characters with a key matching the NIR"
    return None
