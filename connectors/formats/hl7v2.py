"""HL7 v2 messages for interface engines (DPI, DUI, Mirth...): sans-IO serialisers.

- ``oru_r01_from_hprim_net`` / ``oru_r01_from_hprim_sante``: HL7 v2.5 ORU^R01 (one
  message per patient: MSH, PID, then per request ORC, OBR, NTE, OBX, NTE), mapped as
  formats notes §6 lays out: HPRIM ``~`` components become HL7 ``^`` components, text is
  re-escaped (HL7 v2.5 §2.7), OBX-8 carries the flag and OBX-11 the status.
- ``mdm_from_cda``: HL7 v2.6 MDM^T02 / T10 / T04 carrying one CDA document, per the ANS
  CI-SIS volet "Transmission au LPS d'un document CDA provenant d'un courriel MSSanté"
  (ansforge/IG-hl7v2-volet-trans-lps-doc-cda-courriel-mss, profils-messages): MSH-21
  ``1.1^CISIS_CDA_HL7_LPS``, EVN, PID, PV1-2 ``N``, ORC (NW / RO / CA), OBR-4 = the
  document type, TXA (TXA-2 type, TXA-3 ``TEXT``, TXA-12 from ``ClinicalDocument/id``,
  TXA-13 the replaced document, TXA-17 ``AU``), OBX-1 ``ED`` with the CDA in base64,
  PRT (pre-adopted from v2.9) for the sender ``SB``, the recipients ``RCT`` and the
  reply address ``REPLY``, OBX-2 the mail, OBX-3..6 the MetaDMPMSS restrictions.
  ``version="2.5"`` is for older engines: MSH-12 ``2.5`` and no PRT segment (PRT does
  not exist before v2.7).

PID-3 carries the INS only when the caller says the identity is qualified (INS
annex of the CI-SIS: an unqualified identity never transmits the INS), as
``matricule^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS``.

Control id (MSH-10) and time (MSH-7) are inputs: a delivery job keeps the same control
id across retries so the receiver can drop a duplicate. Segments end with CR.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .cda_dlu import CdaHeader
from .hprim_net import HprimNetRecord
from .hprim_sante import HprimSanteFile, HprimSantePatient

Field = str | Sequence["Field"]
INS_NIR_OID = "1.2.250.1.213.1.4.8"
# Assigning authority names of the INS OIDs (CI-SIS INS annex, IHE PAM France).
INS_AUTHORITIES = {"1.2.250.1.213.1.4.8": "ASIP-SANTE-INS-NIR",
                   "1.2.250.1.213.1.4.9": "ASIP-SANTE-INS-NIA",
                   "1.2.250.1.213.1.4.10": "ASIP-SANTE-INS-NIR-TEST",
                   "1.2.250.1.213.1.4.11": "ASIP-SANTE-INS-NIR-DEMO"}
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)$")
META_DMP_MSS = (("MASQUE_PS", "Masqué aux professionnels de Santé"),
                ("INVISIBLE_PATIENT", "Document Non Visible par le patient"),
                ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient"),
                ("MODIF_CONF_CODE", "Modification Confidentiality Code"))


@dataclass(frozen=True, slots=True)
class Hl7Options:
    """The message-level fields a target configures or a job fixes."""

    control_id: str
    timestamp: str  # YYYYMMDDHHMMSS[+ZZZZ]
    sending_application: str = "MSS"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"  # P production, T test (mss connector test), D debug


@dataclass(frozen=True, slots=True)
class QualifiedIns:
    """An INS the router has matched to a qualified identity (never an HPRIM NIR)."""

    matricule: str
    oid: str = INS_NIR_OID


def escape(text: str) -> str:
    """HL7 v2.5 §2.7.4 escapes for the default delimiters ``|^~\\&``; line breaks
    become ``\\.br\\`` (§2.7.6)."""
    if not text:
        return ""
    text = (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
            .replace("&", "\\T\\").replace("~", "\\R\\"))
    if "\r" in text or "\n" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\.br\\")
    return text


class Repeated(tuple):
    """The repetitions of one field (joined with ``~``)."""


def _encode(value: Field, depth: int = 0) -> str:
    """A field given as nested sequences: components (``^``) of sub-components (``&``),
    or :class:`Repeated` repetitions. Strings are escaped; the structure is ours."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, Repeated):
        return "~".join(_encode(part, depth) for part in value)
    separator = ("^", "&")[min(depth, 1)]
    return separator.join(_encode(part, depth + 1) for part in value)


def segment(name: str, *fields: Field | None) -> str:
    """One segment, trailing empty fields dropped."""
    encoded = ["" if f is None else _encode(f) for f in fields]
    while encoded and not encoded[-1]:
        encoded.pop()
    return "|".join([name, *encoded])


def _msh(options: Hl7Options, message_type: Sequence[str], version: str,
         profile: str | None = None) -> str:
    # MSH-1 is the field separator itself and MSH-2 the encoding characters (§2.14.9):
    # written literally, never escaped.
    fields = [options.sending_application, options.sending_facility,
              options.receiving_application, options.receiving_facility, options.timestamp,
              "", "^".join(message_type), options.control_id, options.processing_id, version,
              "", "", "", "", "FRA", "UNICODE UTF-8", "", "", profile or ""]
    encoded = [escape(f) if i not in (6, 18) else f for i, f in enumerate(fields)]
    while encoded and not encoded[-1]:
        encoded.pop()
    return "MSH|^~\\&|" + "|".join(encoded)


def hl7_datetime(value: str | None) -> str:
    """ISO ``YYYY-MM-DD[THH:MM[:SS]]`` -> HL7 DTM ``YYYYMMDD[HHMM[SS]]``."""
    if not value:
        return ""
    return value.replace("-", "").replace("T", "").replace(":", "")


def _pid_ins(ins: QualifiedIns | None) -> list[Field]:
    if ins is None:
        return []
    authority = INS_AUTHORITIES.get(ins.oid, "")
    return [[ins.matricule, "", "", [authority, ins.oid, "ISO"], "INS"]]


def _range(low: str | None, high: str | None) -> str:
    if low and high:
        return f"{low}-{high}"
    if high:
        return f"<{high}"
    if low:
        return f">{low}"
    return ""


def _numeric(value: str) -> str | None:
    """HL7 NM wants a ``.`` decimal: ``4,8`` is sent as ``4.8``; not a number -> None."""
    text = value.strip()
    return text.replace(",", ".") if _NUMBER.match(text) else None


def _obx(seq: int, value_type: str, code: str, label: str, system: str, value: str,
         unit: str, reference: str, flag: str, status: str, when: str = "",
         coded: Sequence[str] | None = None) -> str:
    number = _numeric(value) if value_type in ("NM", "N", "") else None
    if coded is not None:
        kind, payload = "CE", list(coded)
    elif number is not None:
        kind, payload = "NM", number
    else:
        kind = value_type if value_type in ("ST", "TX", "FT") else "ST"
        payload = value
    # OBX-11 is required (HL7 v2.5 §7.4.2.11); a result without a status is sent final.
    return segment("OBX", str(seq), kind, [code, label, system], "", payload, unit,
                   reference, flag, "", "", status or "F", "", "", when)


def _nte(seq: int, text: str, source: str = "L") -> str:
    return segment("NTE", str(seq), source, text)


def oru_r01_from_hprim_net(record: HprimNetRecord, options: Hl7Options,
                           ins: QualifiedIns | None = None) -> str:
    """One HPRIM Net record (one patient) as an ORU^R01 v2.5."""
    patient = record.patient
    local_id: Field = [patient.id, "", "", record.sender.code, "PI"]
    statuses = {r.status for r in record.results}
    report_status = "F" if statuses <= {"F", ""} else "P"
    segments = [
        _msh(options, ("ORU", "R01", "ORU_R01"), "2.5"),
        segment("PID", "1", "", Repeated([*_pid_ins(ins), local_id]), "",
                [patient.last_name, patient.first_name], "",
                (patient.birth_date or "").replace("-", ""), "", "", "",
                [patient.address1, patient.address2, patient.city, "", patient.postcode]),
        segment("ORC", "RE", "", record.request_id),
        segment("OBR", "1", "", record.request_id, ["11502-2", "Laboratory report", "LN"], "",
                "", (record.request_date or "").replace("-", ""), "", "", "", "", "", "", "",
                "", [record.recipient.code, record.recipient.name], "", "", "", "", "",
                "", "", "", report_status),
    ]
    notes = [*record.body_text.split("\n"), *record.lab_text]
    while notes and not notes[-1].strip():
        notes.pop()
    while notes and not notes[0].strip():
        notes.pop(0)
    segments.extend(_nte(i, text) for i, text in enumerate(notes, 1))
    for seq, result in enumerate(record.results, 1):
        segments.append(_obx(seq, "NM" if result.type == "N" else "ST", result.code,
                             result.label, "L", result.value, result.unit,
                             _range(result.low, result.high), result.flag, result.status))
    return "\r".join(segments) + "\r"


def oru_r01_from_hprim_sante(hprim: HprimSanteFile, patient: HprimSantePatient,
                             options: Hl7Options, ins: QualifiedIns | None = None) -> str:
    """One patient of an HPRIM Santé file as an ORU^R01 v2.5."""
    ids: list[Field] = [*_pid_ins(ins)]
    if patient.id_lab:
        ids.append([patient.id_lab, "", "", hprim.header.sender_id, "PI"])
    if patient.id_prescriber:
        ids.append([patient.id_prescriber, "", "", hprim.header.receiver_id, "PI"])
    names: list[Field] = [[patient.last_name, patient.first_name, "", "", "", "", "D"]]
    if patient.birth_name and patient.birth_name != patient.last_name:
        names.insert(0, [patient.birth_name, patient.first_name, "", "", "", "", "L"])
    address = patient.address
    segments = [
        _msh(options, ("ORU", "R01", "ORU_R01"), "2.5"),
        segment("PID", "1", "", Repeated(ids), "", Repeated(names), "",
                (patient.birth_date or "").replace("-", ""), patient.sex, "", "",
                [address.street, address.street2, address.city, "", address.postcode]),
    ]
    for comment_seq, comment in enumerate(patient.comments, 1):
        segments.append(_nte(comment_seq, comment))
    for number, request in enumerate(patient.requests, 1):
        test = request.tests[0] if request.tests else None
        service = [test.code, test.label, test.coding_system] if test else ["", "", ""]
        prescriber = request.prescriber
        segments.append(segment("ORC", "RE", request.placer_id, request.filler_id))
        segments.append(segment(
            "OBR", str(number), request.placer_id, request.filler_id, service, request.priority,
            "", hl7_datetime(request.collection_datetime), "", "", "", "", "", "",
            hl7_datetime(request.reception_datetime), "",
            [prescriber.id, prescriber.last_name, prescriber.first_name], "", "", "", "", "",
            "", "", "", request.status))
        segments.extend(_nte(i, text) for i, text in enumerate(request.comments, 1))
        for seq, result in enumerate(request.results, 1):
            coded = ([result.value_code or "", result.value_label or "", ""]
                     if result.value_type == "CE" else None)
            if coded is not None and "~" in result.value:
                parts = result.value.split("~")
                coded[2] = parts[2] if len(parts) > 2 else ""
            segments.append(_obx(seq, result.value_type, result.code, result.label,
                                 result.coding_system, result.value, result.unit,
                                 result.range, result.flag, result.status,
                                 hl7_datetime(result.datetime), coded))
            segments.extend(_nte(i, text) for i, text in enumerate(result.comments, 1))
    return "\r".join(segments) + "\r"


@dataclass(frozen=True, slots=True)
class MailContext:
    """The MSSanté mail the document came in (OBX-2 and the PRT segments of the volet)."""

    sender: str
    recipients: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    message_id: str = ""
    subject: str = ""
    body: bytes = b""
    confidentiality_codes: tuple[str, ...] = field(default_factory=tuple)


def _txa_id(root: str | None, extension: str | None) -> Field:
    # Volet TXA-12/13: extension^^root^ISO when the id has an extension, else the root.
    if extension:
        return [extension, "", root or "", "ISO"]
    return root or ""


def mdm_from_cda(document: bytes, header: CdaHeader, mail: MailContext, options: Hl7Options,
                 *, event: str | None = None, ins_qualified: bool = True,
                 version: str = "2.6") -> str:
    """One CDA document as MDM^T02 (original), ^T10 (replacement: the CDA has a
    ``relatedDocument`` RPLC, or ``event="T10"``) or ^T04 (deletion request)."""
    if event is None:
        event = "T10" if header.parent_root else "T02"
    if event not in ("T02", "T10", "T04"):
        raise ValueError(f"MDM event {event!r}: T02, T10 or T04")
    if version not in ("2.6", "2.5"):
        raise ValueError(f"HL7 version {version!r}: 2.6 or 2.5")
    order_control = {"T02": "NW", "T10": "RO", "T04": "CA"}[event]
    result_status = {"T02": "F", "T10": "C", "T04": "D"}[event]
    patient = header.patient
    ids: list[Field] = []
    if ins_qualified and patient.ins and patient.ins_oid:
        ids.extend(_pid_ins(QualifiedIns(patient.ins, patient.ins_oid)))
    if patient.ipp:
        ids.append([patient.ipp, "", "", ["", patient.ipp_oid or "", "ISO"], "PI"])
    names: list[Field] = [[patient.birth_name or patient.family, patient.given, "", "", "", "",
                           "L"]]
    if patient.family and patient.family != patient.birth_name:
        names.append([patient.family, patient.given, "", "", "", "", "D"])
    code = [header.code or "", header.code_display or header.title, "LN"]
    effective = (header.effective_time or "")[:14]
    segments = [
        _msh(options, ("MDM", event, "MDM_T02"), version, "1.1^CISIS_CDA_HL7_LPS"),
        segment("EVN", "", options.timestamp),
        segment("PID", "", "", Repeated(ids), "", Repeated(names), "",
                patient.birth_date or "", patient.sex or "", "", "",
                [patient.street, "", patient.city, "", patient.postcode]),
        segment("PV1", "1", "N"),
        segment("ORC", order_control),
        segment("OBR", "1", "", "", code),
        segment("TXA", "1", header.code or "", "TEXT", effective, "", "", "", "", "", "", "",
                _txa_id(header.id_root, header.id_extension),
                _txa_id(header.parent_root, header.parent_extension) if event == "T10" else "",
                "", "", "", "AU"),
        segment("OBX", "1", "ED", code, "",
                ["", "text", "XML", "Base64", base64.b64encode(document).decode("ascii")],
                "", "", "", "", "", result_status),
    ]
    if version == "2.6":
        segments.append(_prt("SB", "Send by", mail.sender))
        segments.extend(_prt("RCT", "Result Copies To", r) for r in mail.recipients)
        segments.extend(_prt("REPLY", "Reply To", r) for r in mail.reply_to)
    seq = 2
    if mail.message_id or mail.body:
        segments.append(segment("OBX", str(seq), "ED", [mail.message_id, mail.subject], "",
                                ["", "text", "", "Base64",
                                 base64.b64encode(mail.body).decode("ascii")],
                                "", "", "", "", "", "F"))
        seq += 1
    active = set(mail.confidentiality_codes)
    for code_value, label in META_DMP_MSS:
        segments.append(segment("OBX", str(seq), "CWE", [code_value, label, "MetaDMPMSS"], "",
                                ["Y" if code_value in active else "N", "",
                                 "expandedYes-NoIndicator"], "", "", "", "", "", "F"))
        seq += 1
    return "\r".join(segments) + "\r"


def _prt(code: str, label: str, address: str) -> str:
    # PRT-2 action UC, PRT-4 participation, PRT-15 telecom ^^X.400^address (volet table).
    return segment("PRT", "", "UC", "", [code, label, "participation"], "", "", "", "", "",
                   "", "", "", "", "", ["", "", "X.400", address])

