"""French formatting of what the pages show (babel, locale fr_FR): sizes in "Mo" with a
decimal comma, dates in Paris time. One place, so that every page says "23,04 Mo" and
"6 déc. 2026, 14:05" the same way."""

from __future__ import annotations

from datetime import datetime

from babel.dates import format_datetime, get_timezone
from babel.numbers import format_decimal

LOCALE = "fr_FR"
PARIS = get_timezone("Europe/Paris")
MIB = 1024 * 1024


def megabytes(octets: int) -> str:
    """"23,04 Mo" (Mo = 2^20 octets, as the seeds' platform counts its quota)."""
    return f"{format_decimal(octets / MIB, format='#,##0.00', locale=LOCALE)} Mo"


def percent(part: int, whole: int) -> str:
    """"11,52 %" (two decimals; 0 when there is no limit)."""
    ratio = (100.0 * part / whole) if whole > 0 else 0.0
    return f"{format_decimal(ratio, format='0.00', locale=LOCALE)} %"


def quota_line(used: int, limit: int) -> str:
    """"État du quota : 23,04 Mo / 200,00 Mo (11,52 %)"."""
    return f"État du quota : {megabytes(used)} / {megabytes(limit)} ({percent(used, limit)})"


def size(octets: int) -> str:
    """A message or attachment size, short: "812 o", "12 ko", "3,4 Mo"."""
    if octets < 1024:
        return f"{octets} o"
    if octets < MIB:
        return f"{format_decimal(round(octets / 1024), locale=LOCALE)} ko"
    return f"{format_decimal(octets / MIB, format='#,##0.0', locale=LOCALE)} Mo"


def date_short(when: datetime | None) -> str:
    """"6 déc. 2026, 14:05" in Paris time ("" when unknown)."""
    if when is None:
        return ""
    return format_datetime(when, "d MMM y, HH:mm", tzinfo=PARIS, locale=LOCALE)


def date_long(when: datetime | None) -> str:
    """"dimanche 6 décembre 2026 à 14:05" in Paris time."""
    if when is None:
        return ""
    return format_datetime(when, "EEEE d MMMM y 'à' HH:mm", tzinfo=PARIS, locale=LOCALE)
