"""Validation of national identifiers (pure functions, no I/O).

Rules of the national identifiers (ANS): RPPS is 11 digits whose last is a Luhn check digit;
ADELI is 9 digits; FINESS is 9 characters (département may be 2A/2B) whose last is a Luhn-style
key; SIRET is 14 digits, Luhn. A validator returns the normalised value or raises
`IdentifierError` with a message a person can act on.
"""

from __future__ import annotations

import re

MAIL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


class IdentifierError(ValueError):
    """An identifier that does not follow its national format."""


def luhn_ok(digits: str) -> bool:
    """Luhn (ISO/IEC 7812-1) check over a string of digits, the check digit last."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_digit(body: str) -> str:
    """The Luhn check digit to append to `body`."""
    for d in "0123456789":
        if luhn_ok(body + d):
            return d
    raise AssertionError("unreachable")


def validate_rpps(value: str) -> str:
    v = value.strip()
    if not re.fullmatch(r"\d{11}", v):
        raise IdentifierError(f"RPPS must be 11 digits, got {value!r}")
    if not luhn_ok(v):
        raise IdentifierError(f"RPPS {v} has a wrong check digit (Luhn): expected {luhn_digit(v[:10])}")
    return v


def validate_adeli(value: str) -> str:
    v = value.strip()
    if not re.fullmatch(r"\d{9}", v):
        raise IdentifierError(f"ADELI must be 9 digits, got {value!r}")
    return v


def _finess_digits(v: str) -> str:
    # Corsica: 2A -> 20 and 2B -> 20 for the key computation (the département becomes numeric).
    return v.replace("2A", "20", 1).replace("2B", "20", 1) if v[:2] in ("2A", "2B") else v


def validate_finess(value: str) -> str:
    v = value.strip().upper()
    if not re.fullmatch(r"(\d{2}|2A|2B)\d{7}", v):
        raise IdentifierError(f"FINESS must be 9 characters (2 for the département), got {value!r}")
    if not luhn_ok(_finess_digits(v)):
        raise IdentifierError(f"FINESS {v} has a wrong key: expected {luhn_digit(_finess_digits(v)[:8])}")
    return v


def validate_siret(value: str) -> str:
    v = value.strip().replace(" ", "")
    if not re.fullmatch(r"\d{14}", v):
        raise IdentifierError(f"SIRET must be 14 digits, got {value!r}")
    if not luhn_ok(v):
        raise IdentifierError(f"SIRET {v} fails its Luhn check")
    return v


def validate_mail(value: str) -> str:
    v = value.strip()
    if len(v) > 320 or not MAIL_RE.match(v):
        raise IdentifierError(f"not a mail address: {value!r}")
    local, domain = v.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def national_id(kind: str, ident: str) -> str:
    """'Identification nationale PP': 8 + RPPS, 0 + ADELI."""
    return ("8" if kind == "RPPS" else "0") + ident
