"""The national open-data extraction files, sans I/O: headers, line decoding, row mapping.

Everything here works on bytes and str handed in by the caller (directory/importers/run.py
reads the file and writes the database). Column names and order follow
the ANS open-data extraction files; docs/directory.md says how each column is mapped.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from directory.identifiers import IdentifierError, validate_finess, validate_mail, validate_rpps

ACTIVITY = "activity"
MSSANTE = "mssante"

ACTIVITY_COLUMNS = (
    "Type d'identifiant PP", "Identifiant PP", "Identification nationale PP",
    "Code civilité d'exercice", "Libellé civilité d'exercice", "Code civilité", "Libellé civilité",
    "Nom d'exercice", "Prénom d'exercice", "Code profession", "Libellé profession",
    "Code catégorie professionnelle", "Libellé catégorie professionnelle",
    "Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire", "Libellé savoir-faire",
    "Code mode exercice", "Libellé mode exercice", "Numéro SIRET site", "Numéro SIREN site",
    "Numéro FINESS site", "Numéro FINESS établissement juridique",
    "Identifiant technique de la structure", "Raison sociale site", "Enseigne commerciale site",
    "Complément destinataire (coord. structure)", "Complément point géographique (coord. structure)",
    "Numéro Voie (coord. structure)", "Indice répétition voie (coord. structure)",
    "Code type de voie (coord. structure)", "Libellé type de voie (coord. structure)",
    "Libellé Voie (coord. structure)", "Mention distribution (coord. structure)",
    "Bureau cedex (coord. structure)", "Code postal (coord. structure)",
    "Code commune (coord. structure)", "Libellé commune (coord. structure)",
    "Code pays (coord. structure)", "Libellé pays (coord. structure)",
    "Téléphone (coord. structure)", "Téléphone 2 (coord. structure)", "Télécopie (coord. structure)",
    "Adresse e-mail (coord. structure)", "Code Département (structure)",
    "Libellé Département (structure)", "Ancien identifiant de la structure",
    "Autorité d'enregistrement", "Code secteur d'activité", "Libellé secteur d'activité",
    "Code section tableau pharmaciens", "Libellé section tableau pharmaciens", "Code rôle",
    "Libellé rôle", "Code genre activité", "Libellé genre activité",
)

MSSANTE_COLUMNS = (
    "Type de BAL", "Adresse BAL", "Type Identifiant PP", "Identifiant PP",
    "Identification nationale PP", "Type identifiant structure", "Identification Structure",
    "Service de rattachement", "Civilité d'exercice", "Nom d'exercice", "Prénom d'exercice",
    "Catégorie profession", "Libellé de catégorie profession", "Code Profession",
    "Libellé Profession", "Code savoir-faire", "Libellé savoir-faire", "Dématérialisation",
    "Raison Sociale structure BAL", "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL", "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL", "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL", "L4LIBELLEVOIE structure BAL", "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL", "Code postal structure BAL", "Département structure BAL",
    "Pays structure BAL",
)

COLUMNS = {ACTIVITY: ACTIVITY_COLUMNS, MSSANTE: MSSANTE_COLUMNS}
FILE_NAMES = {ACTIVITY: "PS_LibreAcces_Personne_activite", MSSANTE: "Extraction_Correspondance_MSSante"}
BAL_TYPES = ("PER", "ORG", "APP", "CAB")


class FormatError(ValueError):
    """The file as a whole cannot be imported (unknown header, empty file)."""


class RowError(ValueError):
    """One line is rejected; the import goes on."""


def _norm(name: str) -> str:
    """Header comparison: no accents, no case, no spaces or punctuation."""
    d = unicodedata.normalize("NFKD", name)
    return "".join(c for c in d if c.isalnum()).lower()


_SIGNATURES = {kind: [_norm(c) for c in cols] for kind, cols in COLUMNS.items()}


def split_line(line: str) -> list[str]:
    """Fields of one pipe-separated line (end of line and the trailing `|` removed)."""
    line = line.rstrip("\r\n")
    fields = line.split("|")
    if len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return fields


def detect_kind(header: str) -> str:
    """`activity` or `mssante` from the header line, else FormatError (one sentence)."""
    names = [_norm(f) for f in split_line(header.lstrip("\ufeff"))]
    for kind, sig in _SIGNATURES.items():
        # Exact column count and the identifying first columns; later labels vary slightly
        # between ANS releases (accents, capitals), so only a majority must agree.
        if len(names) == len(sig) and names[:3] == sig[:3]:
            same = sum(1 for a, b in zip(names, sig, strict=True) if a == b)
            if same * 2 >= len(sig):
                return kind
    raise FormatError(
        f"unrecognised header ({len(names)} columns, starting {header[:40].strip()!r}): expected the "
        f"{len(ACTIVITY_COLUMNS)}-column professionals' activity file ({FILE_NAMES[ACTIVITY]}) or the "
        f"{len(MSSANTE_COLUMNS)}-column MSSanté mailbox file ({FILE_NAMES[MSSANTE]})")


# --- encoding ---------------------------------------------------------------------------

class LineDecoder:
    """Decodes lines as UTF-8 until one is not valid UTF-8, then as Windows-1252 from there on.

    `encoding` says what was used: "utf-8", "windows-1252", or "utf-8+windows-1252" when a file
    had valid non-ASCII UTF-8 lines before a Windows-1252 one (each line decoded on its own).
    """

    def __init__(self) -> None:
        self.utf8 = True
        self.saw_utf8_non_ascii = False
        self.switched_at: int | None = None
        self.bom = False

    def decode(self, raw: bytes, lineno: int) -> str:
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
            self.bom = True
        if self.utf8:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.utf8 = False
                self.switched_at = lineno
            else:
                if not self.saw_utf8_non_ascii and not raw.isascii():
                    self.saw_utf8_non_ascii = True
                return text
        # Bytes 0x81 0x8D 0x8F 0x90 0x9D are undefined in Windows-1252: keep them as U+FFFD.
        return raw.decode("cp1252", errors="replace")

    @property
    def encoding(self) -> str:
        if self.utf8:
            return "utf-8"
        return "utf-8+windows-1252" if self.saw_utf8_non_ascii else "windows-1252"


@dataclass
class Line:
    number: int  # 1-based line number in the file (the header is line 1)
    text: str
    complete: bool  # ended with a newline
    size: int = 0  # bytes in the file


def iter_lines(chunks: Iterable[bytes], decoder: LineDecoder, start: int = 1) -> Iterator[Line]:
    """Lines from an iterable of raw lines (a binary file object): constant memory.
    `start` is the number of the first line (2 when the caller has read the header)."""
    n = start - 1
    for raw in chunks:
        n += 1
        yield Line(n, decoder.decode(raw, n), raw.endswith(b"\n"), len(raw))


# --- records ----------------------------------------------------------------------------

def _digest(*values: object) -> str:
    return hashlib.blake2b("\x1f".join("" if v is None else str(v) for v in values).encode(),
                           digest_size=8).hexdigest()


def _opt(v: str) -> str | None:
    v = v.strip()
    return v or None


def _join(*parts: str | None) -> str | None:
    s = " ".join(p.strip() for p in parts if p and p.strip())
    return s or None


@dataclass(slots=True)
class PersonRec:
    national_id: str
    id_type: str
    ident: str
    civility_code: str | None
    civility_label: str | None
    family_name: str
    given_name: str | None
    profession_code: str | None
    profession_label: str | None
    category_code: str | None
    specialty_code: str | None
    specialty_label: str | None

    def digest(self) -> str:
        return _digest(self.id_type, self.ident, self.civility_code, self.civility_label, self.family_name,
                       self.given_name, self.profession_code, self.profession_label, self.category_code,
                       self.specialty_code, self.specialty_label)

    def values(self) -> dict[str, object]:
        return {"national_id": self.national_id, "id_type": self.id_type, "ident": self.ident,
                "civility_code": self.civility_code, "civility_label": self.civility_label,
                "family_name": self.family_name, "family_lc": self.family_name.lower(),
                "given_name": self.given_name, "given_lc": self.given_name.lower() if self.given_name else None,
                "profession_code": self.profession_code, "profession_label": self.profession_label,
                "category_code": self.category_code, "specialty_code": self.specialty_code,
                "specialty_label": self.specialty_label}


@dataclass(slots=True)
class StructureRec:
    tech_id: str
    finess: str | None
    finess_legal: str | None
    siret: str | None
    name: str
    brand: str | None
    street: str | None
    postal_code: str | None
    city: str | None
    phone: str | None
    sector_code: str | None
    sector_label: str | None

    def digest(self) -> str:
        return _digest(self.finess, self.finess_legal, self.siret, self.name, self.brand, self.street,
                       self.postal_code, self.city, self.phone, self.sector_code, self.sector_label)

    def values(self) -> dict[str, object]:
        return {"tech_id": self.tech_id, "finess": self.finess, "finess_legal": self.finess_legal,
                "siret": self.siret, "name": self.name, "name_lc": self.name.lower(), "brand": self.brand,
                "street": self.street, "postal_code": self.postal_code, "city": self.city,
                "city_lc": self.city.lower() if self.city else None, "phone": self.phone,
                "sector_code": self.sector_code, "sector_label": self.sector_label}


@dataclass(slots=True)
class ActivityRow:
    """One line of the activity file: the professional, the site (if any), the activity."""

    person: PersonRec
    structure: StructureRec | None
    role_code: str | None
    role_label: str | None
    mode_code: str | None
    mode_label: str | None

    @property
    def key(self) -> str:
        """The national id first: files are sorted by professional, so the unique index on the
        key grows at its end instead of at random places (import speed at a million rows)."""
        return self.person.national_id + ":" + _digest(
            self.structure.tech_id if self.structure else None, self.role_code, self.mode_code,
            self.role_label, self.mode_label)


@dataclass(slots=True)
class MailboxRow:
    """One line of the MSSanté file: the mailbox, with the minimal person / structure it names."""

    address: str
    bal_type: str
    display_name: str | None
    service: str | None
    dematerialised: bool
    person: PersonRec | None
    structure: StructureRec | None

    def digest(self) -> str:
        return _digest(self.address, self.bal_type, self.display_name, self.service, self.dematerialised,
                       self.person.national_id if self.person else None,
                       self.structure.tech_id if self.structure else None)


_DOUBLE = {str(d): (2 * d - 9 if d > 4 else 2 * d) for d in range(10)}


def _rpps_ok(v: str) -> bool:
    """Fast path of identifiers.validate_rpps for the importer's hot loop (same Luhn rule)."""
    if len(v) != 11 or not v.isdigit() or not v.isascii():
        return False
    return (sum(map(int, v[-1::-2])) + sum(_DOUBLE[c] for c in v[-2::-2])) % 10 == 0


def _person(type_pp: str, ident: str, national: str, *, civ_code: str | None, civ_label: str | None,
            family: str, given: str | None, prof_code: str | None, prof_label: str | None,
            cat_code: str | None, spec_code: str | None, spec_label: str | None) -> PersonRec:
    type_pp, ident, national = type_pp.strip(), ident.strip(), national.strip()
    if type_pp == "8":
        if not _rpps_ok(ident):
            try:
                ident = validate_rpps(ident)  # for its message
            except IdentifierError as exc:
                raise RowError(str(exc)) from None
        id_type = "RPPS"
    elif type_pp == "0":
        if not (len(ident) == 9 and ident.isdigit()):
            raise RowError(f"ADELI must be 9 digits, got {ident!r}")
        id_type = "ADELI"
    else:
        raise RowError(f"unknown identifier type {type_pp!r} (8 = RPPS, 0 = ADELI)")
    expected = type_pp + ident
    if national and national != expected:
        raise RowError(f"Identification nationale PP {national!r} does not match {expected!r}")
    if not family.strip():
        raise RowError("the family name (Nom d'exercice) is empty")
    return PersonRec(expected, id_type, ident, civ_code, civ_label, family.strip(), _opt(given or ""),
                     prof_code, prof_label, cat_code, spec_code, spec_label)


def _finess(value: str, what: str) -> str | None:
    v = value.strip()
    if not v:
        return None
    try:
        return validate_finess(v)
    except IdentifierError as exc:
        raise RowError(f"{what}: {exc}") from None


_last_person: list[Any] = [None, None]  # (the 17 person fields of the last row, its PersonRec)


def parse_activity(f: list[str]) -> ActivityRow:
    """Map one 56-field activity line (fields already split) or raise RowError.

    A professional's rows are consecutive in the national file: the last person parsed is
    reused when the next row carries the same person fields."""
    o = f  # every value read below goes through _opt / strip
    pkey = f[:17]
    if _last_person[0] == pkey:
        person = _last_person[1]
    else:
        person = _person(o[0], o[1], o[2], civ_code=_opt(o[3]) or _opt(o[5]), civ_label=_opt(o[4]) or _opt(o[6]),
                         family=o[7], given=o[8], prof_code=_opt(o[9]), prof_label=_opt(o[10]),
                         cat_code=_opt(o[11]), spec_code=_opt(o[15]), spec_label=_opt(o[16]))
        _last_person[0], _last_person[1] = pkey, person
    finess = _finess(o[21], "FINESS site")
    finess_legal = _finess(o[22], "FINESS établissement juridique")
    siret = _opt(o[19])
    tech = _opt(o[23]) or (f"F{finess}" if finess else (f"S{siret}" if siret else None))
    structure = None
    if tech:
        street = _join(o[28], o[29], o[31], o[32])
        structure = StructureRec(
            tech_id=tech[:40], finess=finess, finess_legal=finess_legal, siret=siret,
            name=o[24].strip() or o[25].strip() or tech, brand=_opt(o[25]), street=street,
            postal_code=_opt(o[35]), city=_opt(o[37]) or _opt(o[34]), phone=_opt(o[40]),
            sector_code=_opt(o[48]), sector_label=_opt(o[49]))
    return ActivityRow(person, structure, _opt(o[52]), _opt(o[53]), _opt(o[17]), _opt(o[18]))


_YES = {"o", "oui", "y", "yes", "1", "true", "vrai"}
_NO = {"n", "non", "no", "0", "false", "faux"}


def parse_mssante(f: list[str]) -> MailboxRow:
    """Map one 31-field MSSanté line or raise RowError."""
    o = [x.strip() for x in f]
    bal_type = o[0].upper()
    if bal_type not in BAL_TYPES:
        raise RowError(f"mailbox type (Type de BAL) must be one of {', '.join(BAL_TYPES)}, got {o[0]!r}")
    try:
        address = validate_mail(o[1])
    except IdentifierError as exc:
        raise RowError(str(exc)) from None
    person = None
    if o[3]:
        person = _person(o[2], o[3], o[4], civ_code=_opt(o[8]), civ_label=None, family=o[9] or o[3],
                         given=o[10], prof_code=_opt(o[13]), prof_label=_opt(o[14]), cat_code=_opt(o[11]),
                         spec_code=_opt(o[15]), spec_label=_opt(o[16]))
    structure = None
    if o[6]:
        city_line = _opt(o[27])  # L6: "75001 PARIS"
        city = city_line.split(" ", 1)[1] if city_line and " " in city_line and city_line[:5].isdigit() else city_line
        structure = StructureRec(
            tech_id=o[6][:40], finess=None, finess_legal=None, siret=None, name=o[18] or o[19] or o[6],
            brand=_opt(o[19]), street=_join(o[22], o[23], o[24], o[25]), postal_code=_opt(o[28]),
            city=city, phone=None, sector_code=None, sector_label=None)
        if o[5] in ("1", "FINESS") and len(o[6]) == 10 and o[6][0] == "1":
            structure.finess = _finess(o[6][1:], "Identification Structure")
    demat = o[17].lower()
    if demat and demat not in _YES and demat not in _NO:
        raise RowError(f"Dématérialisation must be O or N, got {o[17]!r}")
    if person is not None:
        display = _join(person.given_name, person.family_name)
    else:
        display = _join(o[7]) or (structure.name if structure else None)
    return MailboxRow(address, bal_type, display, _opt(o[7]), demat not in _NO, person, structure)


PARSERS = {ACTIVITY: parse_activity, MSSANTE: parse_mssante}


@dataclass(slots=True)
class Rejected:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def parse_line(kind: str, line: Line) -> ActivityRow | MailboxRow | Rejected | None:
    """A parsed row, a Rejected (line number and reason), or None for a blank line.

    Only the last line of a file can miss its end of line: when it also misses columns or
    its trailing `|`, the file was cut short (a truncated download or copy)."""
    if not line.text.strip():
        return None
    n = len(COLUMNS[kind])
    fields = split_line(line.text)
    if not line.complete and (len(fields) != n or not line.text.rstrip("\r").endswith("|")):
        return Rejected(line.number, f"truncated last line ({len(fields)} of {n} columns, no end of line)")
    if len(fields) != n:
        return Rejected(line.number, f"wrong column count: {len(fields)} instead of {n}")
    try:
        return PARSERS[kind](fields)
    except RowError as exc:
        return Rejected(line.number, str(exc))
