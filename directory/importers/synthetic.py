"""Synthetic national extraction files (tests, benchmark, demos): same columns as the real ones.

`activity_line()` / `mssante_line()` build one line from a few named fields; the others are
left empty or filled with plausible constants. `write_activity_file()` / `write_mssante_file()`
write N rows streaming (the benchmarks' 1M-row files); both draw family names from
`family_name()`, spread like a national file's (a few common names, many rare ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from directory.identifiers import luhn_digit
from directory.importers.formats import ACTIVITY_COLUMNS, MSSANTE_COLUMNS


def rpps(n: int) -> str:
    body = f"1{n:09d}"
    return body + luhn_digit(body)


def finess(n: int, dept: str = "75") -> str:
    body = f"{dept}{n:06d}"
    return body + luhn_digit(body)


def header(columns: tuple[str, ...]) -> str:
    return "|".join(columns) + "|\n"


ACTIVITY_HEADER = header(ACTIVITY_COLUMNS)
MSSANTE_HEADER = header(MSSANTE_COLUMNS)


def activity_line(*, rpps_id: str, family: str, given: str = "", profession: tuple[str, str] = ("10", "Médecin"),
                  civility: str = "DR", specialty: tuple[str, str] = ("", ""), tech_id: str = "",
                  site_name: str = "", finess_site: str = "", finess_legal: str = "", siret: str = "",
                  postal_code: str = "", city: str = "", street: tuple[str, str, str] = ("", "", ""),
                  role: tuple[str, str] = ("FON-01", "Titulaire de cabinet"),
                  mode: tuple[str, str] = ("L", "Libéral"), type_pp: str = "8", national: str | None = None) -> str:
    f = [""] * len(ACTIVITY_COLUMNS)
    f[0], f[1], f[2] = type_pp, rpps_id, national if national is not None else type_pp + rpps_id
    f[3], f[4] = civility, {"DR": "Docteur", "PR": "Professeur", "M": "Monsieur", "MME": "Madame"}.get(civility, "")
    f[7], f[8] = family, given
    f[9], f[10] = profession
    f[11], f[12] = "C", "Civil"
    if specialty[0]:
        f[13], f[14] = "S", "Spécialité ordinale"
        f[15], f[16] = specialty
    f[17], f[18] = mode
    f[19], f[20] = siret, siret[:9]
    f[21], f[22], f[23] = finess_site, finess_legal, tech_id
    f[24] = site_name
    f[28], f[31], f[32] = street
    f[35], f[37] = postal_code, city
    f[38], f[39] = "99000", "France"
    f[47] = "RPPS"
    f[52], f[53] = role
    return "|".join(f) + "|\n"


def mssante_line(*, address: str, bal_type: str = "PER", rpps_id: str = "", family: str = "", given: str = "",
                 structure_id: str = "", service: str = "", site_name: str = "", demat: str = "O",
                 profession: tuple[str, str] = ("10", "Médecin"), postal_code: str = "",
                 city_line: str = "") -> str:
    f = [""] * len(MSSANTE_COLUMNS)
    f[0], f[1] = bal_type, address
    if rpps_id:
        f[2], f[3], f[4] = "8", rpps_id, "8" + rpps_id
        f[8], f[9], f[10] = "DR", family, given
        f[11], f[12] = "C", "Civil"
        f[13], f[14] = profession
    if structure_id:
        f[5], f[6] = "4", structure_id
    f[7], f[17], f[18] = service, demat, site_name
    f[27], f[28] = city_line, postal_code
    f[30] = "France"
    return "|".join(f) + "|\n"


FAMILIES = ("Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
            "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel")
GIVENS = ("Jean", "Marie", "Pierre", "Anne", "Hélène", "Luc", "Élodie", "François", "Chloé", "Noël")
CITIES = (("75001", "Paris"), ("69001", "Lyon"), ("13001", "Marseille"), ("31000", "Toulouse"),
          ("06000", "Nice"), ("44000", "Nantes"), ("67000", "Strasbourg"), ("34000", "Montpellier"))
# Syllables of the generated family names: 40 x 40 two-syllable and 64,000 three-syllable names.
SYLLABLES = ("ba", "bel", "ber", "bon", "bou", "ca", "cha", "col", "da", "del", "du", "fa", "fer", "ga",
             "gil", "gou", "la", "lan", "le", "lou", "ma", "mar", "mo", "na", "no", "pa", "per", "pi", "ra",
             "ren", "ri", "ro", "sa", "sel", "ta", "ter", "tho", "va", "vi", "ye")
DOMAINS = ("sante.example", "hopital.example", "medecin.example", "pharma.example")


def family_name(person: int) -> str:
    """A family name with a national-file-like spread: 10% share 18 common names (about 0.55% of
    the people each), 20% 1,600 two-syllable names, 70% 64,000 three-syllable ones."""
    h = (person * 2654435761) & 0xFFFFFFFF
    r, h = h % 100, h // 100
    if r < 10:
        return FAMILIES[h % len(FAMILIES)]
    n = len(SYLLABLES)
    name = SYLLABLES[h % n] + SYLLABLES[(h // n) % n]
    if r >= 30:
        name += SYLLABLES[(h // (n * n)) % n]
    return name.capitalize()


def activity_rows(n: int, *, seed: int = 0) -> Iterator[str]:
    """`n` activity lines: about 1.4 rows per professional, one site per 20 professionals."""
    i = row = 0
    while row < n:
        person = seed + i
        fam = family_name(person)
        for k in range(1 + (person % 5 == 0) + (person % 5 == 1)):
            if row >= n:
                break
            site = (person // 20) * 3 + k
            pc, city = CITIES[site % len(CITIES)]
            yield activity_line(rpps_id=rpps(person), family=fam.upper(), given=GIVENS[person % len(GIVENS)],
                                specialty=("SM54", "Médecine générale") if person % 3 else ("", ""),
                                tech_id=f"R1{site:08d}", site_name=f"Cabinet {FAMILIES[site % 18]} {site}",
                                finess_site=finess(site) if site % 4 == 0 else "", postal_code=pc, city=city.upper(),
                                street=(str(1 + site % 120), "R", "DE LA RÉPUBLIQUE"))
            row += 1
        i += 1


def _ascii(s: str) -> str:
    return s.translate(str.maketrans("àâçéèêëîïôöùûüÀÂÇÉÈÊËÎÏÔÖÙÛÜ", "aaceeeeiioouuuAACEEEEIIOOUUU"))


def mssante_rows(n: int, *, seed: int = 0) -> Iterator[str]:
    """`n` MSSanté lines (one mailbox each): per 20 professionals, 20 personal mailboxes, 3 second
    ones at another operator, and one organisational mailbox of their site (24 lines)."""
    person = seed
    row = 0
    while row < n:
        fam, given = family_name(person), GIVENS[person % len(GIVENS)]
        site = person // 20
        pc, city = CITIES[site % len(CITIES)]
        local = _ascii(f"{given}.{fam}").lower().replace(" ", "-")
        site_name = f"Cabinet {FAMILIES[site % 18]} {site}"
        kw = dict(bal_type="PER", rpps_id=rpps(person), family=fam.upper(), given=given,
                  structure_id=f"R1{site:08d}", site_name=site_name, postal_code=pc, city_line=f"{pc} {city.upper()}")
        lines = [mssante_line(address=f"{local}.{person}@{DOMAINS[person % 4]}", **kw)]
        if person % 20 in (0, 7, 14):
            lines.append(mssante_line(address=f"{local}.{person}@{DOMAINS[(person + 1) % 4]}", **kw))
        if person % 20 == 19:
            lines.append(mssante_line(address=f"secretariat.{site}@{DOMAINS[site % 4]}", bal_type="ORG",
                                      structure_id=f"R1{site:08d}", service="Secrétariat", site_name=site_name,
                                      postal_code=pc, city_line=f"{pc} {city.upper()}"))
        yield from lines[:n - row]
        row += min(len(lines), n - row)
        person += 1


def _write(path: Path, header: str, rows: Iterator[str], encoding: str) -> Path:
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(header)
        buf: list[str] = []
        for line in rows:
            buf.append(line)
            if len(buf) >= 10_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return path


def write_mssante_file(path: Path, n: int, *, encoding: str = "utf-8", seed: int = 0) -> Path:
    return _write(path, MSSANTE_HEADER, mssante_rows(n, seed=seed), encoding)


def write_activity_file(path: Path, n: int, *, encoding: str = "utf-8", seed: int = 0) -> Path:
    return _write(path, ACTIVITY_HEADER, activity_rows(n, seed=seed), encoding)
