"""Synthetic national extraction files (tests, benchmark, demos): same columns as the real ones.

`activity_line()` / `mssante_line()` build one line from a few named fields; the others are
left empty or filled with plausible constants. `activity_file()` writes N rows streaming.
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


def activity_rows(n: int, *, seed: int = 0) -> Iterator[str]:
    """`n` activity lines: about 1.4 rows per professional, one site per 20 professionals."""
    i = row = 0
    while row < n:
        person = seed + i
        fam = FAMILIES[person % len(FAMILIES)] + ("" if person % 7 else "-" + FAMILIES[(person // 7) % 18])
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


def write_activity_file(path: Path, n: int, *, encoding: str = "utf-8", seed: int = 0) -> Path:
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(ACTIVITY_HEADER)
        buf: list[str] = []
        for line in activity_rows(n, seed=seed):
            buf.append(line)
            if len(buf) >= 10_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return path
