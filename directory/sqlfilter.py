"""Translate a parsed RFC 4515 filter into a SQLAlchemy WHERE clause over the mailbox entries.

The directory's searchable entries are the mailboxes (BAL) joined to their owner person and
structure (see `entry_select`). Every attribute maps to an indexed column; text attributes map
to their lowercased copy so equality and prefix are caseIgnoreMatch (RFC 4517) and indexed.
RFC 4511 section 4.5.1.7: an item on an unknown attribute is Undefined, and Undefined combines
like SQL NULL (NOT Undefined is Undefined, Undefined OR TRUE is TRUE), so it is a typed NULL.
An attribute absent from an entry makes an item FALSE, hence the `IS NOT NULL` guards.
approxMatch (~=) is our choice: case-insensitive equality after stripping accents is not
indexable, so it is prefix match on the lowercased value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, cast, false, null, or_, select, true
from sqlalchemy.orm import aliased

from directory.filters import And, Compare, Extensible, Filter, Not, Or, Present, Substrings
from directory.models import DirMailbox, DirPerson, DirStructure

Person = aliased(DirPerson, name="p")
Structure = aliased(DirStructure, name="s")

# objectClass values carried by every mailbox entry (see directory/schema.py).
MAILBOX_CLASSES = frozenset({"top", "person", "organizationalperson", "inetorgperson", "mssmailbox"})


@dataclass(frozen=True)
class Attr:
    column: Any
    kind: str = "text"  # text (lowercased column) | exact | upper | int | bool


ATTRS: dict[str, Attr] = {
    "mail": Attr(DirMailbox.address_lc),
    "cn": Attr(DirMailbox.display_lc),
    "displayname": Attr(DirMailbox.display_lc),
    "sn": Attr(Person.family_lc),
    "givenname": Attr(Person.given_lc),
    "rppsid": Attr(Person.ident, "exact"),
    "nationalid": Attr(Person.national_id, "exact"),
    "professioncode": Attr(Person.profession_code, "exact"),
    "specialtycode": Attr(Person.specialty_code, "exact"),
    "mailboxtype": Attr(DirMailbox.bal_type, "upper"),
    "o": Attr(Structure.name_lc),
    "l": Attr(Structure.city_lc),
    "postalcode": Attr(Structure.postal_code, "exact"),
    "finessid": Attr(Structure.finess, "exact"),
    "siretid": Attr(Structure.siret, "exact"),
    "preferredrank": Attr(DirMailbox.preferred_rank, "int"),
    "acceptsdematerialised": Attr(DirMailbox.dematerialised, "bool"),
    "unlisted": Attr(DirMailbox.unlisted, "bool"),
}

UNDEFINED: ColumnElement[bool] = cast(null(), Boolean)


def entry_select(*columns: Any):
    """SELECT over mailbox entries with their optional person and structure."""
    return (select(*columns)
            .select_from(DirMailbox)
            .outerjoin(Person, DirMailbox.person_id == Person.id)
            .outerjoin(Structure, DirMailbox.structure_id == Structure.id))


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


def to_sql(node: Filter, dialect: str = "sqlite") -> ColumnElement[bool]:
    """The WHERE clause for `node`; `dialect` picks the indexable prefix form."""
    match node:
        case And(items):
            return and_(true(), *(to_sql(i, dialect) for i in items))
        case Or(items):
            return or_(false(), *(to_sql(i, dialect) for i in items))
        case Not(item):
            return ~to_sql(item, dialect)
        case Present(attr):
            name = attr.split(";")[0].lower()
            if name == "objectclass":
                return true()
            a = ATTRS.get(name)
            return UNDEFINED if a is None else a.column.is_not(None)
        case Compare(attr, op, value):
            return _compare(attr.split(";")[0].lower(), op, value, dialect)
        case Substrings(attr, initial, anys, final):
            return _substrings(attr.split(";")[0].lower(), initial, anys, final, dialect)
        case Extensible():
            return UNDEFINED  # no extensible matching rules are offered (RFC 4511 4.5.1.7.7)
    raise TypeError(node)


def _compare(name: str, op: str, value: str, dialect: str) -> ColumnElement[bool]:
    if name == "objectclass":
        if op in ("=", "~="):
            return true() if value.lower() in MAILBOX_CLASSES else false()
        return UNDEFINED
    a = ATTRS.get(name)
    if a is None:
        return UNDEFINED
    try:
        v = _norm(a, value)
    except ValueError:
        return UNDEFINED  # an assertion value invalid for the syntax: RFC 4511 4.5.1.7
    col = a.column
    if op == "=":
        return and_(col.is_not(None), col == v)
    if op == ">=":
        return and_(col.is_not(None), col >= v)
    if op == "<=":
        return and_(col.is_not(None), col <= v)
    if a.kind == "text":  # ~=
        return _prefix(col, str(v), dialect)
    return and_(col.is_not(None), col == v)


def _prefix(col: Any, prefix: str, dialect: str) -> ColumnElement[bool]:
    pattern = _like_escape(prefix) + "%"
    if dialect == "sqlite" and prefix:
        # SQLite only uses an index for LIKE under case_sensitive_like; a range on the BINARY
        # collation is exactly the prefix set and is indexed.
        return and_(col.is_not(None), col >= prefix, col < prefix + "\U0010ffff")
    return and_(col.is_not(None), col.like(pattern, escape="\\"))


def _substrings(name: str, initial: str | None, anys: tuple[str, ...], final: str | None,
                dialect: str) -> ColumnElement[bool]:
    a = ATTRS.get(name)
    if name == "objectclass" or a is None or a.kind in ("int", "bool"):
        return UNDEFINED  # no substrings matching rule for these syntaxes
    norm = (lambda s: s.lower()) if a.kind == "text" else (lambda s: s.upper() if a.kind == "upper" else s)
    col = a.column
    parts = [norm(initial or "")] + [norm(x) for x in anys] + [norm(final or "")]
    pattern = "%".join(_like_escape(p) for p in parts)
    like = and_(col.is_not(None), col.like(pattern, escape="\\"))
    if initial and (anys or final):
        return and_(_prefix(col, norm(initial), dialect), like)
    if initial:
        return _prefix(col, norm(initial), dialect)
    return and_(col.is_not(None), like)



