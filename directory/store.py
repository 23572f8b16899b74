"""Directory store operations over the server's `Store` (its `db.read()` / `db.write()`).

Protocol code (LDAP, CLI, SMTP lookups) calls these, never SQL of its own. Writes normalise
the lowercased search columns in one place (`_lc`) so the indexes always agree with the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from directory.filters import Filter
from directory.identifiers import national_id, validate_adeli, validate_mail, validate_rpps
from directory.models import BAL_TYPES, DirMailbox, DirPerson, DirStructure
from directory.sqlfilter import Person, Structure, entry_select, to_sql


@contextmanager
def _unique(what: str) -> Iterator[None]:
    """A duplicate natural key becomes a clear ValueError instead of a driver exception."""
    try:
        yield
    except IntegrityError as exc:
        raise ValueError(f"{what} already exists in the directory") from exc


def _lc(v: str | None) -> str | None:
    return v.lower() if v is not None else None


@dataclass
class Entry:
    """One mailbox entry as the LDAP view and the API see it."""

    address: str
    bal_type: str
    display_name: str | None
    unlisted: bool
    preferred_rank: int
    dematerialised: bool
    service: str | None
    family_name: str | None
    given_name: str | None
    rpps: str | None
    national_id: str | None
    profession_code: str | None
    profession_label: str | None
    structure: str | None
    city: str | None
    finess: str | None


ENTRY_COLUMNS = (
    DirMailbox.address, DirMailbox.bal_type, DirMailbox.display_name, DirMailbox.unlisted,
    DirMailbox.preferred_rank, DirMailbox.dematerialised, DirMailbox.service,
    Person.family_name, Person.given_name, Person.ident, Person.national_id,
    Person.profession_code, Person.profession_label, Structure.name, Structure.city, Structure.finess,
)


def add_person(store: Any, *, ident: str, family_name: str, given_name: str | None = None,
               id_type: str = "RPPS", civility_code: str | None = None,
               profession_code: str | None = None, profession_label: str | None = None,
               specialty_code: str | None = None, specialty_label: str | None = None) -> int:
    ident = validate_rpps(ident) if id_type == "RPPS" else validate_adeli(ident)
    with _unique("a person with this identifier"), store.db.write() as s:
        p = DirPerson(id_type=id_type, ident=ident, national_id=national_id(id_type, ident),
                      civility_code=civility_code, family_name=family_name, family_lc=family_name.lower(),
                      given_name=given_name, given_lc=_lc(given_name), profession_code=profession_code,
                      profession_label=profession_label, specialty_code=specialty_code,
                      specialty_label=specialty_label)
        s.add(p)
        s.flush()
        return p.id


def add_structure(store: Any, *, tech_id: str, name: str, finess: str | None = None,
                  siret: str | None = None, city: str | None = None, postal_code: str | None = None,
                  street: str | None = None, sector_code: str | None = None) -> int:
    with _unique("a structure with this identifier"), store.db.write() as s:
        st = DirStructure(tech_id=tech_id, name=name, name_lc=name.lower(), finess=finess, siret=siret,
                          city=city, city_lc=_lc(city), postal_code=postal_code, street=street,
                          sector_code=sector_code)
        s.add(st)
        s.flush()
        return st.id


def add_mailbox(store: Any, *, address: str, bal_type: str, person_id: int | None = None,
                structure_id: int | None = None, display_name: str | None = None,
                service: str | None = None, responsible: str | None = None, unlisted: bool = False,
                preferred_rank: int = 1, dematerialised: bool = True) -> int:
    address = validate_mail(address)
    if bal_type not in BAL_TYPES:
        raise ValueError(f"mailbox type must be one of {', '.join(BAL_TYPES)}, got {bal_type!r}")
    with _unique("a mailbox with this address"), store.db.write() as s:
        m = DirMailbox(address=address, address_lc=address.lower(), bal_type=bal_type,
                       person_id=person_id, structure_id=structure_id, display_name=display_name,
                       display_lc=_lc(display_name), service=service, responsible=responsible,
                       unlisted=unlisted, preferred_rank=preferred_rank, dematerialised=dematerialised)
        s.add(m)
        s.flush()
        return m.id


def search(store: Any, node: Filter, *, include_unlisted: bool = False, limit: int | None = None,
           after: str | None = None, address: str | None = None) -> list[Entry]:
    """Entries matching `node`, ordered by address; `after` is the paging cursor (keyset)."""
    q = entry_select(*ENTRY_COLUMNS).where(to_sql(node, store.db.engine.dialect.name))
    if not include_unlisted:
        # Liste rouge is never published. coalesce() keeps the planner off the (unselective)
        # unlisted index: the filter's own index must drive the query.
        q = q.where(func.coalesce(DirMailbox.unlisted, False) == False)  # noqa: E712
    if address is not None:
        q = q.where(DirMailbox.address_lc == address.lower())
    if after is not None:
        q = q.where(DirMailbox.address_lc > after)
    # `|| ''` keeps the planner from walking the address index in order (and filtering every
    # row) when the filter's own index is far more selective; the few matches are then sorted.
    q = q.order_by(DirMailbox.address_lc + "")
    if limit is not None:
        q = q.limit(limit)
    with store.db.read() as s:
        return [Entry(*row) for row in s.execute(q)]


def is_known_recipient(store: Any, address: str) -> bool:
    """SMTP: is `address` a mailbox of the directory (listed or not)."""
    with store.db.read() as s:
        return s.scalar(select(DirMailbox.id).where(DirMailbox.address_lc == address.lower())) is not None
