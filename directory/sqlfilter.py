"""Translate a parsed RFC 4515 filter into the SQL WHERE clause over the mailbox entries.

The directory's searchable entries are the mailboxes (BAL) joined to their owner person and
structure (`FROM_ENTRIES`: aliases m, p, s). Every attribute maps to an indexed column; text
attributes map to their lowercased copy so equality and prefix are caseIgnoreMatch (RFC 4517)
and indexed. RFC 4511 section 4.5.1.7: an item on an unknown attribute is Undefined, and
Undefined combines like SQL NULL (NOT Undefined is Undefined, Undefined OR TRUE is TRUE), so it
is a typed NULL. An attribute absent from an entry makes an item FALSE, hence the `IS NOT NULL`
guards. approxMatch (~=) is our choice: case-insensitive equality after stripping accents is not
indexable, so it is prefix match on the lowercased value.

The clause is SQL text with `?` placeholders and its values apart (`where`): a filter of a given
shape always gives the same text, so the driver's prepared-statement cache serves it (sqlite3
caches by text) and no SQL toolkit runs per search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from directory.filters import And, Compare, Extensible, Filter, Not, Or, Present, Substrings

FROM_ENTRIES = ("dir_mailboxes m LEFT JOIN dir_persons p ON p.id = m.person_id "
                "LEFT JOIN dir_structures s ON s.id = m.structure_id")

# objectClass values carried by every mailbox entry (see directory/schema.py).
MAILBOX_CLASSES = frozenset({"top", "person", "organizationalperson", "inetorgperson", "mssmailbox"})


@dataclass(frozen=True)
class Attr:
    column: str
    kind: str = "text"  # text (lowercased column) | exact | upper | int | bool


ATTRS: dict[str, Attr] = {
    "mail": Attr("m.address_lc"),
    "cn": Attr("m.display_lc"),
    "displayname": Attr("m.display_lc"),
    "sn": Attr("p.family_lc"),
    "givenname": Attr("p.given_lc"),
    "rppsid": Attr("p.ident", "exact"),
    "nationalid": Attr("p.national_id", "exact"),
    "professioncode": Attr("p.profession_code", "exact"),
    "specialtycode": Attr("p.specialty_code", "exact"),
    "mailboxtype": Attr("m.bal_type", "upper"),
    "o": Attr("s.name_lc"),
    "l": Attr("s.city_lc"),
    "postalcode": Attr("s.postal_code", "exact"),
    "finessid": Attr("s.finess", "exact"),
    "siretid": Attr("s.siret", "exact"),
    "preferredrank": Attr("m.preferred_rank", "int"),
    "acceptsdematerialised": Attr("m.dematerialised", "bool"),
    "unlisted": Attr("m.unlisted", "bool"),
}

TRUE, FALSE = "(1=1)", "(1=0)"
UNDEFINED = "CAST(NULL AS BOOLEAN)"


def _norm(attr: Attr, value: str) -> Any:
    if attr.kind == "text":
        return value.lower()
    if attr.kind == "upper":
        return value.upper()
    if attr.kind == "int":
        return int(value)
    if attr.kind == "bool":
        # RFC 4517 section 3.3.3: Boolean is "TRUE" / "FALSE".
        if value.upper() not in ("TRUE", "FALSE"):
            raise ValueError(value)
        return value.upper() == "TRUE"
    return value.strip()


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _tables(node: Filter) -> set[str]:
    """The table aliases (m, p, s) a filter reads."""
    match node:
        case And(items) | Or(items):
            return set().union(*map(_tables, items))
        case Not(item):
            return _tables(item)
        case Present(attr) | Compare(attr) | Substrings(attr):
            a = ATTRS.get(attr.split(";")[0].lower())
            return {a.column[0]} if a else set()
    return set()


def _from(tables: set[str]) -> str:
    """FROM_ENTRIES with only the joins that `tables` need."""
    return "dir_mailboxes m" + (" LEFT JOIN dir_persons p ON p.id = m.person_id" if "p" in tables else "") + (
        " LEFT JOIN dir_structures s ON s.id = m.structure_id" if "s" in tables else "")


def where(node: Filter, dialect: str, params: list[Any], positive: bool = True) -> str:
    """The WHERE clause for `node`, its values appended to `params`; `dialect` picks the
    indexable prefix form. `positive`: no NOT above `node`, so only its being TRUE matters
    (FALSE and Undefined both leave the entry out)."""
    match node:
        case And(items):
            return "(" + " AND ".join(where(i, dialect, params, positive) for i in items) + ")" if items else TRUE
        case Or(items):
            if not items:
                return FALSE
            if positive and len(_tables(node)) > 1:
                # An OR over columns of different tables is a full scan for both engines (SQLite's
                # OR optimisation works within one table): each branch is its own indexed query,
                # and the entry is in when a branch finds it, which is TRUE exactly when the OR is.
                return "m.id IN (" + " UNION ALL ".join(
                    f"SELECT m.id FROM {_from(_tables(i))} WHERE {where(i, dialect, params)}" for i in items) + ")"
            return "(" + " OR ".join(where(i, dialect, params, positive) for i in items) + ")"
        case Not(item):
            return "(NOT " + where(item, dialect, params, False) + ")"
        case Present(attr):
            name = attr.split(";")[0].lower()
            if name == "objectclass":
                return TRUE
            a = ATTRS.get(name)
            return UNDEFINED if a is None else f"({a.column} IS NOT NULL)"
        case Compare(attr, op, value):
            return _compare(attr.split(";")[0].lower(), op, value, dialect, params)
        case Substrings(attr, initial, anys, final):
            return _substrings(attr.split(";")[0].lower(), initial, anys, final, dialect, params)
        case Extensible():
            return UNDEFINED  # no extensible matching rules are offered (RFC 4511 4.5.1.7.7)
    raise TypeError(node)


def _compare(name: str, op: str, value: str, dialect: str, params: list[Any]) -> str:
    if name == "objectclass":
        if op in ("=", "~="):
            return TRUE if value.lower() in MAILBOX_CLASSES else FALSE
        return UNDEFINED
    a = ATTRS.get(name)
    if a is None:
        return UNDEFINED
    try:
        v = _norm(a, value)
    except ValueError:
        return UNDEFINED  # an assertion value invalid for the syntax: RFC 4511 4.5.1.7
    col = a.column
    if op == "~=" and a.kind == "text":
        return _prefix(col, str(v), dialect, params)
    params.append(v)
    sql_op = op if op in (">=", "<=") else "="
    return f"({col} IS NOT NULL AND {col} {sql_op} ?)"


def _prefix(col: str, prefix: str, dialect: str, params: list[Any]) -> str:
    if dialect == "sqlite" and prefix:
        # SQLite only uses an index for LIKE under case_sensitive_like; a range on the BINARY
        # collation is exactly the prefix set and is indexed.
        params += (prefix, prefix + "\U0010ffff")
        return f"({col} IS NOT NULL AND {col} >= ? AND {col} < ?)"
    params.append(_like_escape(prefix) + "%")
    return f"({col} IS NOT NULL AND {col} LIKE ? ESCAPE '\\')"


def _substrings(name: str, initial: str | None, anys: tuple[str, ...], final: str | None,
                dialect: str, params: list[Any]) -> str:
    a = ATTRS.get(name)
    if name == "objectclass" or a is None or a.kind in ("int", "bool"):
        return UNDEFINED  # no substrings matching rule for these syntaxes
    norm = (lambda s: s.lower()) if a.kind == "text" else (lambda s: s.upper() if a.kind == "upper" else s)
    col = a.column
    if initial and not (anys or final):
        return _prefix(col, norm(initial), dialect, params)
    head = _prefix(col, norm(initial), dialect, params) + " AND " if initial else ""
    parts = [norm(initial or "")] + [norm(x) for x in anys] + [norm(final or "")]
    params.append("%".join(_like_escape(p) for p in parts))
    return f"({head}{col} IS NOT NULL AND {col} LIKE ? ESCAPE '\\')"
