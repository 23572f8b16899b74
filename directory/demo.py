"""`mss init --demo`: the directory entries of the demo mailboxes (mssmail/demo.py)."""

from __future__ import annotations

from typing import Any

from directory import store as dstore

# FINESS 75000001 + Luhn key 0 (mssmail/demo.py's owner 750000012 has a wrong key; we list the
# structure under its valid number).
DEMO_FINESS = "750000010"


def create_demo(store: Any, config: Any) -> list[str]:
    from mssmail.demo import DEMO_MAILBOXES

    domain = config.server.domain
    sid = dstore.add_structure(store, tech_id="F" + DEMO_FINESS, name="Laboratoire Biologie Demo",
                               finess=DEMO_FINESS, city="Paris", postal_code="75001",
                               street="1 rue de la Demo")
    people = {
        "jean.martin": ("Martin", "Jean", "10", "Médecin", "SM54", "Médecine générale"),
        "claire.durand": ("Durand", "Claire", "10", "Médecin", "SM04", "Cardiologie"),
    }
    for local, kind, owner, name in DEMO_MAILBOXES:
        address = f"{local}@{domain}"
        if local in people:
            fam, giv, prof, plabel, spec, slabel = people[local]
            pid = dstore.add_person(store, ident=owner, family_name=fam, given_name=giv, civility_code="DR",
                                    profession_code=prof, profession_label=plabel, specialty_code=spec,
                                    specialty_label=slabel)
            dstore.add_mailbox(store, address=address, bal_type="PER", person_id=pid, structure_id=sid,
                               display_name=f"{giv} {fam}")
        else:
            dstore.add_mailbox(store, address=address, bal_type="ORG" if kind == "organisational" else "APP",
                               structure_id=sid, display_name=name, service="Biologie",
                               responsible="Claire Durand")
    return [f"directory: {len(DEMO_MAILBOXES)} demo mailboxes listed under {config.directory.base_dn}"]
