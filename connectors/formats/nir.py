"""NIR (French social-security number) checks used on HPRIM headers and INS values.

The NIR is 13 characters (sex, year, month, department, commune, order) followed by a
2-digit key equal to 97 - (NIR mod 97). Corsican departments 2A / 2B are counted as
19 / 18 before the modulo (INSEE rule, also stated in the CI-SIS INS annex). These
checks only ever produce warnings: a lab may send an insured person's NIR that is not
the patient's, and a wrong key is a reason to look, not to drop a result.
"""

from __future__ import annotations

import re

_NIR_SHAPE = re.compile(r"^[12378][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{6}$", re.IGNORECASE)


def nir_key(nir: str) -> int | None:
    """The expected 2-digit key of a 13-character NIR, or ``None`` if it is not one."""
    if not _NIR_SHAPE.match(nir):
        return None
    upper = nir.upper()
    corsica = {"2A": "19", "2B": "18"}.get(upper[5:7])
    digits = upper[:5] + corsica + upper[7:] if corsica else upper
    return 97 - (int(digits) % 97)


def nir_key_is_valid(nir: str, key: str) -> bool:
    """True when ``key`` (two digits) is the key of ``nir``."""
    expected = nir_key(nir)
    return expected is not None and (key.isascii() and key.isdigit()) and len(key) == 2 and int(key) == expected


def nir_birth_month(nir: str) -> int | None:
    """The birth month the NIR encodes (positions 4-5), when it is a real month.

    Months 20-42 and 50-99 exist for people whose birth month is unknown or who were
    registered late; they are not compared.
    """
    if len(nir) < 5 or not (nir[3:5].isascii() and nir[3:5].isdigit()):
        return None
    month = int(nir[3:5])
    return month if 1 <= month <= 12 else None


def split_ins(value: str) -> tuple[str, str]:
    """Split a 15-character INS matricule into (NIR, key)."""
    return value[:13], value[13:]


def ins_warnings(ins: str, where: str) -> list[str]:
    """Warnings for an INS matricule (15 characters: NIR + key)."""
    if len(ins) != 15:
        return [f"{where}: INS {len(ins)} characters long, 15 expected"]
    nir, key = split_ins(ins)
    if not nir_key_is_valid(nir, key):
        return [f"{where}: INS key {key} does not match the NIR"]
    return []
