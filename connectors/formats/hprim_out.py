"""HPRIM Net for folder drop: re-encoding, and rendering other inputs as HPRIM Net.

Practice software that reads an integration folder expects HPRIM Net text, usually in
CP1252 with CRLF (formats notes §1). The default for a folder target is the original
bytes untouched; ``reencode`` changes only the charset and the line ends, and
``render_*`` write the HPRIM Médecin 3.0 layout (12-line header, text, ``****LAB****``
block, ``****FIN****``, ``****FINFICHIER****``) for one record, one HPRIM Santé patient
or one DLU, for LGCs that read nothing else.

HPRIM Net has no escape mechanism: a ``|`` inside a value would open a field, and a line
break would end the line, so both become a space in RES and TEX lines (the readable text
keeps its lines). Characters the target charset lacks become ``?``; the count is
returned so the caller can warn.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cda_dlu import Dlu
from .decoding import detect_layout, iter_lines
from .hprim_net import HprimNetRecord, record_marker
from .hprim_sante import HprimSanteFile, HprimSantePatient

CHARSETS = ("cp1252", "iso-8859-1", "utf-8")
NEWLINES = {"CRLF": "\r\n", "LF": "\n"}


@dataclass(frozen=True, slots=True)
class Encoded:
    data: bytes
    replaced: int  # characters the charset could not represent (written as "?")


def _encode(lines: list[str], charset: str, newline: str) -> Encoded:
    if charset not in CHARSETS:
        raise ValueError(f"charset {charset!r}: one of {', '.join(CHARSETS)}")
    if newline not in NEWLINES:
        raise ValueError(f"newline {newline!r}: CRLF or LF")
    text = NEWLINES[newline].join(lines) + NEWLINES[newline]
    data = text.encode(charset, errors="replace")
    replaced = 0
    if charset != "utf-8":
        replaced = sum(1 for ch in text if ch != "?" and _unencodable(ch, charset))
    return Encoded(data, replaced)


def _unencodable(char: str, charset: str) -> bool:
    try:
        char.encode(charset)
    except UnicodeEncodeError:
        return True
    return False


def reencode(data: bytes, charset: str = "cp1252", newline: str = "CRLF") -> Encoded:
    """The same text in another charset / line end (decoded by the connector rule)."""
    layout = detect_layout(data)
    return _encode([text for _, text in iter_lines(data, layout)], charset, newline)


_FLATTEN = str.maketrans({"|": " ", "\r": " ", "\n": " ", "\t": " "})


def _flat(text: str | None) -> str:
    """A value for a one-line, ``|``-separated place: no separator, no line break."""
    if not text:
        return ""
    return text.translate(_FLATTEN).strip()


def _date(iso: str | None) -> str:
    """ISO ``YYYY-MM-DD...`` or CDA ``YYYYMMDD...`` -> ``DD/MM/YYYY``."""
    if not iso:
        return ""
    digits = iso.replace("-", "")[:8]
    if len(digits) < 8 or not (digits.isascii() and digits.isdigit()):
        return ""
    return f"{digits[6:8]}/{digits[4:6]}/{digits[:4]}"


def _party(code: str, name: str) -> str:
    # Lines 11/12: the code fills the first 10 columns. A longer code (a 12-digit
    # national PS id) cannot be cut without becoming someone else's: it is left out.
    code = _flat(code)
    return f"{code if len(code) <= 10 else '':<10}{_flat(name)}".rstrip()


def _text(line: str) -> str:
    """A free-text line; one that reads as a record marker is quoted, so text from a
    document can never close the record or open a LAB block."""
    return f"'{line.strip()}'" if record_marker(line) else line


def _res(label: str, code: str, kind: str, value: str, unit: str, low: str | None,
         high: str | None, flag: str, status: str, second: tuple[str, ...] = ("",) * 4) -> str:
    fields = [label, code, kind, value, unit, low or "", high or "", flag, status, *second]
    return "RES|" + "|".join(_flat(f) for f in fields) + "|"


def _header(patient_id: str, last_name: str, first_name: str, address1: str, address2: str,
            postcode: str, city: str, birth: str, nir: str, request_id: str,
            request_date: str, sender: str, recipient: str) -> list[str]:
    return [_flat(patient_id), _flat(last_name), _flat(first_name), _flat(address1),
            _flat(address2), f"{_flat(postcode)} {_flat(city)}".strip(), birth, _flat(nir),
            _flat(request_id), request_date, sender, recipient]


def record_lines(record: HprimNetRecord) -> list[str]:
    """One HPRIM Net record (e.g. one patient split out of a multi-patient file)."""
    patient = record.patient
    nir = f"{patient.nir} {patient.nir_key}".strip()
    lines = _header(patient.id, patient.last_name, patient.first_name, patient.address1,
                    patient.address2, patient.postcode, patient.city, _date(patient.birth_date),
                    nir, record.request_id, _date(record.request_date),
                    _party(record.sender.code, record.sender.name),
                    _party(record.recipient.code, record.recipient.name))
    lines.extend(record.body_text.split("\n") if record.body_text else [])
    if record.has_lab or record.results or record.lab_text:
        lines.append("****LAB****")
        lines.extend(f"TEX|{_flat(t)}" if t else "TEX" for t in record.lab_text)
        lines.extend(_res(r.label, r.code, r.type, r.value, r.unit, r.low, r.high, r.flag,
                          r.status, (r.value2, r.unit2, r.low2, r.high2))
                     for r in record.results)
    lines.append("****FIN****")
    return lines


def render_record(record: HprimNetRecord, charset: str = "cp1252",
                  newline: str = "CRLF") -> Encoded:
    return _encode([*record_lines(record), "****FINFICHIER****"], charset, newline)


def render_hprim_sante_patient(hprim: HprimSanteFile, patient: HprimSantePatient,
                               charset: str = "cp1252", newline: str = "CRLF") -> Encoded:
    """One HPRIM Santé patient as an HPRIM Net record."""
    header = hprim.header
    first = patient.requests[0] if patient.requests else None
    address = patient.address
    lines = _header(patient.id_lab or patient.id_prescriber, patient.last_name,
                    patient.first_name, address.street, address.street2, address.postcode,
                    address.city, _date(patient.birth_date), "",
                    first.filler_id if first else "",
                    _date(first.collection_datetime) if first else "",
                    _party(header.sender_id, header.sender_name),
                    _party(header.receiver_id, header.receiver_name))
    text: list[str] = [""]
    lab: list[str] = []
    for request in patient.requests:
        title = ", ".join(t.label or t.code for t in request.tests)
        text.append(title)
        lab.append(f"TEX|{_flat(title)}" if title else "TEX")
        for comment in request.comments:
            text.append(f"  {comment}")
            lab.append(f"TEX|{_flat(comment)}")
        for r in request.results:
            shown = r.value_label if r.value_type == "CE" and r.value_label else r.value
            line = f"  {r.label} : {shown} {r.unit}".rstrip()
            if r.range:
                line += f" ({r.range})"
            if r.abnormal:
                line += " *"
            text.append(line)
            text.extend(f"    {c}" for c in r.comments)
            kind = "N" if r.value_type == "NM" else "A"
            lab.append(_res(r.label, r.code, kind, shown, r.unit, r.low, r.high, r.flag,
                            r.status))
            lab.extend(f"TEX|{_flat(c)}" for c in r.comments)
    lines.extend(_text(line) for line in text)
    lines.append("****LAB****")
    lines.extend(lab)
    lines.extend(["****FIN****", "****FINFICHIER****"])
    return _encode(lines, charset, newline)


DLU_TITLES = {"disposition": "Établissement de santé de préférence",
              "active_problems": "Pathologies actives", "history": "Antécédents",
              "allergies": "Allergies et intolérances", "treatments": "Traitements",
              "advance_directives": "Directives anticipées",
              "event_outcomes": "État psychique, handicaps, déplacements, risques",
              "bmr": "Portage BMR", "vaccinations": "Vaccinations",
              "attached_documents": "Documents ajoutés", "comment": "Commentaire"}


def render_dlu(dlu: Dlu, charset: str = "cp1252", newline: str = "CRLF") -> Encoded:
    """A DLU as an HPRIM Net text record (no LAB block: a DLU has no lab results).

    Line 8 carries the INS matricule only for an INS-NIR (it is then the patient's own
    NIR); line 12, the recipient, is the médecin traitant."""
    header = dlu.header
    patient = header.patient
    nir = ""
    if patient.ins and patient.ins_oid == "1.2.250.1.213.1.4.8" and len(patient.ins) == 15:
        nir = f"{patient.ins[:13]} {patient.ins[13:]}"
    author = header.author
    attending = dlu.attending_physician
    lines = _header(patient.ipp or "", patient.family, patient.given, patient.street, "",
                    patient.postcode, patient.city, _date(patient.birth_date), nir,
                    header.id_extension or header.id_root or "", _date(header.effective_time),
                    _party(author.idnat_ps or "" if author else "",
                           f"{author.family} {author.given}" if author else ""),
                    _party(attending.idnat_ps or "" if attending else "",
                           f"{attending.family} {attending.given}" if attending else ""))
    body = ["", header.title or "Document de liaison d'urgence"]
    trusted = dlu.trusted_person
    if trusted is not None:
        body.extend(["", "Personne de confiance",
                      f"  {trusted.given} {trusted.family} ({trusted.relation or ''}) "
                      f"{trusted.phone or ''}".rstrip()])
    for key, content in dlu.sections:
        if content is None:
            continue
        body.extend(["", DLU_TITLES.get(key, key)])
        if isinstance(content, str):
            body.extend(f"  {line}" for line in content.split("\n"))
        else:
            for item in content:
                body.append("  " + (" ; ".join(item) if isinstance(item, list) else item))
    lines.extend(_text(line) for line in body)
    lines.extend(["****FIN****", "****FINFICHIER****"])
    return _encode(lines, charset, newline)
