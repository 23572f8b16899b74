"""The published LDAP schema (RFC 4512 section 4.2: subschema subentry `cn=subschema`).

OIDs: standard ones for inetOrgPerson attributes; ours live under an arc we chose for the
project (1.3.6.1.4.1.99999.1, to be replaced by an assigned enterprise number before
publication). Names follow the ANS MSSanté directory schema.
"""

from __future__ import annotations

ARC = "1.3.6.1.4.1.99999.1"
DSTRING = "1.3.6.1.4.1.1466.115.121.1.15"
INTEGER = "1.3.6.1.4.1.1466.115.121.1.27"
BOOLEAN = "1.3.6.1.4.1.1466.115.121.1.7"

# name, syntax, description
OUR_ATTRIBUTES = [
    ("rppsId", DSTRING, "RPPS identifier (11 digits, Luhn)"),
    ("nationalId", DSTRING, "Identification nationale PP (8+RPPS, 0+ADELI)"),
    ("professionCode", DSTRING, "Profession code (TRE_G15)"),
    ("professionLabel", DSTRING, "Profession label"),
    ("specialtyCode", DSTRING, "Savoir-faire code"),
    ("finessId", DSTRING, "FINESS of the structure"),
    ("siretId", DSTRING, "SIRET of the structure"),
    ("mailboxType", DSTRING, "BAL type: PER, ORG, APP or CAB"),
    ("unlisted", BOOLEAN, "Liste rouge: never published to non-administrators"),
    ("preferredRank", INTEGER, "BAL preferentielle rank (1 = preferred)"),
    ("acceptsDematerialised", BOOLEAN, "Accepts documents by secure mail"),
]


def attribute_types() -> list[str]:
    out = []
    for i, (name, syntax, desc) in enumerate(OUR_ATTRIBUTES, start=1):
        match = "EQUALITY booleanMatch" if syntax == BOOLEAN else (
            "EQUALITY integerMatch ORDERING integerOrderingMatch" if syntax == INTEGER
            else "EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch")
        out.append(f"( {ARC}.1.{i} NAME '{name}' DESC '{desc}' {match} SYNTAX {syntax} SINGLE-VALUE )")
    return out


def object_classes() -> list[str]:
    names = " $ ".join(n for n, _, _ in OUR_ATTRIBUTES)
    return [
        f"( {ARC}.2.1 NAME 'mssMailbox' DESC 'MSSante mailbox (BAL)' SUP top AUXILIARY "
        f"MUST ( mail $ mailboxType ) MAY ( {names} $ o $ l $ ou ) )",
    ]


def subschema_entry() -> dict[str, list[str]]:
    return {
        "objectClass": ["top", "subentry", "subschema", "extensibleObject"],
        "cn": ["subschema"],
        "attributeTypes": attribute_types(),
        "objectClasses": object_classes(),
    }
