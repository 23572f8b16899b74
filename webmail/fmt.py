"""French formatting of what the pages show (babel, locale fr_FR): sizes in "Mo" with a
decimal comma, dates in Paris time. One place, so that every page says "23,04 Mo" and
"6 déc. 2026, 14:05" the same way."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from babel.dates import format_datetime, get_month_names, get_timezone
from babel.numbers import format_decimal, get_decimal_symbol, get_group_symbol

LOCALE = "fr_FR"
PARIS = get_timezone("Europe/Paris")
MIB = 1024 * 1024
# A folder page formats 50 dates and sizes; babel parses its pattern and builds its
# number formatter each time (about 20 µs each, measured). The list's short forms are
# built here from babel's own locale data instead (tests compare them with babel).
_MONTHS = dict(get_month_names("abbreviated", locale=LOCALE))  # a plain dict: babel's mapping is slower to read
_GROUP, _DECIMAL = get_group_symbol(LOCALE), get_decimal_symbol(LOCALE)


def megabytes(octets: int) -> str:
    """"23,04 Mo" (Mo = 2^20 octets, as the seeds' platform counts its quota)."""
    return f"{format_decimal(octets / MIB, format='#,##0.00', locale=LOCALE)} Mo"


@functools.lru_cache(maxsize=1024)  # the quota meter's text, on every page (babel: ~20 µs)
def percent(part: int, whole: int) -> str:
    """"11,52 %" (two decimals; 0 when there is no limit)."""
    ratio = (100.0 * part / whole) if whole > 0 else 0.0
    return f"{format_decimal(ratio, format='0.00', locale=LOCALE)} %"


@functools.lru_cache(maxsize=1024)  # on every page; babel's three formats were ~2% of a page's CPU
def quota_line(used: int, limit: int) -> str:
    """"État du quota : 23,04 Mo / 200,00 Mo (11,52 %)"."""
    return f"État du quota : {megabytes(used)} / {megabytes(limit)} ({percent(used, limit)})"


def size(octets: int) -> str:
    """A message or attachment size, short: "812 o", "12 ko", "3,4 Mo"."""
    if octets < 1024:
        return f"{octets} o"
    if octets < MIB:
        return f"{round(octets / 1024):,} ko".replace(",", _GROUP)
    # babel rounds the decimal value of the float half-even: the same here.
    tenths = Decimal(repr(octets / MIB)).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    return f"{tenths:,} Mo".replace(",", _GROUP).replace(".", _DECIMAL)


def date_short(when: datetime | None) -> str:
    """"6 déc. 2026, 14:05" in Paris time ("" when unknown)."""
    if when is None:
        return ""
    local = (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(PARIS)
    return f"{local.day} {_MONTHS[local.month]} {local.year}, {local.hour:02d}:{local.minute:02d}"


def date_long(when: datetime | None) -> str:
    """"dimanche 6 décembre 2026 à 14:05" in Paris time."""
    if when is None:
        return ""
    return format_datetime(when, "EEEE d MMMM y 'à' HH:mm", tzinfo=PARIS, locale=LOCALE)
