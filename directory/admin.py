"""Administrator operations behind `mss directory modify / remove / add-structure`.

An entry is named by one identifier, validated before any lookup (directory/identifiers.py):
a mail address -> the mailbox; 11 digits -> the person with that RPPS; 9 characters shaped like
a FINESS -> the structure with that FINESS; anything else -> a structure's technical id.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from directory.identifiers import validate_finess, validate_mail, validate_rpps, validate_siret
from directory.models import DirMailbox, DirPerson, DirStructure

MAILBOX_FIELDS = {"display_name", "service", "description", "responsible", "unlisted", "preferred_rank",
                  "dematerialised", "structure"}
PERSON_FIELDS = {"family_name", "given_name", "profession_code", "profession_label", "specialty_code",
                 "specialty_label", "civility_code"}
STRUCTURE_FIELDS = {"name", "city", "postal_code", "street", "siret", "finess_legal", "phone", "sector_code",
                    "sector_label", "brand"}
LC = {"display_name": "display_lc", "family_name": "family_lc", "given_name": "given_lc", "name": "name_lc",
      "city": "city_lc"}


def resolve(ident: str) -> tuple[str, Any, Any]:
    """(kind, model, where-clause) for an identifier; raises IdentifierError with a clear message."""
    v = ident.strip()
    if "@" in v:
        return "mailbox", DirMailbox, DirMailbox.address_lc == validate_mail(v).lower()
    if re.fullmatch(r"\d{11}", v) or (v.isdigit() and len(v) in (10, 12)):
        return "person", DirPerson, DirPerson.national_id == "8" + validate_rpps(v)
    if re.fullmatch(r"(\d{2}|2[ABab])\d{7}", v):
        return "structure", DirStructure, DirStructure.finess == validate_finess(v)
    return "structure", DirStructure, DirStructure.tech_id == v


def _structure_id(s: Any, ref: str | None) -> int | None:
    if not ref:
        return None
    kind, model, where = resolve(ref)
    if kind != "structure":
        raise ValueError(f"{ref} does not name a structure (a FINESS or a technical id)")
    sid = s.scalar(select(model.id).where(where).order_by(model.id).limit(1))
    if sid is None:
        raise ValueError(f"no structure {ref} in the directory")
    return sid


def modify(store: Any, ident: str, changes: dict[str, Any]) -> str:
    """Apply `changes` (only the keys given) to the entry named by `ident`; returns its kind."""
    kind, model, where = resolve(ident)
    allowed = {"mailbox": MAILBOX_FIELDS, "person": PERSON_FIELDS, "structure": STRUCTURE_FIELDS}[kind]
    wrong = sorted(set(changes) - allowed)
    if wrong:
        opts = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise ValueError(f"{opts} cannot be changed on a {kind} (address and mailbox type never change)")
    if not changes:
        raise ValueError("nothing to change: give at least one option")
    if changes.get("siret"):
        changes["siret"] = validate_siret(changes["siret"])
    if "preferred_rank" in changes and changes["preferred_rank"] < 1:
        raise ValueError("the preferred rank must be 1 or more (1 = preferred)")
    with store.db.write() as s:
        obj = s.scalar(select(model).where(where).order_by(model.id).limit(1))
        if obj is None:
            raise ValueError(f"no directory entry for {ident}")
        for key, value in changes.items():
            if key == "structure":
                obj.structure_id = _structure_id(s, value)
                continue
            if key == "family_name" and not value:
                raise ValueError("the family name cannot be empty")
            setattr(obj, key, value)
            if key in LC:
                setattr(obj, LC[key], value.lower() if value else None)
    return kind


def remove(store: Any, ident: str) -> str:
    """Remove the entry named by `ident` (a person's activities go with it; mailboxes that pointed to
    a removed person or structure stay, unlinked). Returns its kind."""
    kind, model, where = resolve(ident)
    with store.db.write() as s:
        obj = s.scalar(select(model).where(where).order_by(model.id).limit(1))
        if obj is None:
            raise ValueError(f"no directory entry for {ident}")
        s.delete(obj)
    return kind
