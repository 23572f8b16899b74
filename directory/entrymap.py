"""LDAP entries to directory models and back: the LDAP server's admin writes and the upstream sync.

An entry of our DIT is one mailbox (`mail=<address>,ou=mailboxes,<base>`) that also carries its
owner person's attributes (rppsId / nationalId, sn, givenName, profession...) and its structure's
(o, l, finessId, siretId, postalCode, street). Writing an entry therefore writes up to three rows:
the person is found (or created) by its national identifier, the structure by its technical id
(F+FINESS, else S+SIRET, else L+digest of name and city, as directory/ldif.py does), and the
mailbox by its address.

`to_record` validates strictly for administrators' writes (unknown attribute: undefinedAttributeType;
unknown objectClass or missing MUST attribute: objectClassViolation; bad value: invalidAttributeSyntax)
and leniently for the sync (attributes we do not model are ignored). Errors carry their LDAP result
code (`EntryError.code`) so the server answers with it and the sync reports it per entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, select

from directory.identifiers import (
    IdentifierError,
    national_id,
    validate_adeli,
    validate_finess,
    validate_mail,
    validate_rpps,
    validate_siret,
)
from directory.models import BAL_TYPES, DirCertificate, DirMailbox, DirPerson, DirStructure

# RFC 4511 result codes used here.
INVALID_SYNTAX = 21
UNDEFINED_ATTRIBUTE_TYPE = 17
CONSTRAINT_VIOLATION = 19
NO_SUCH_OBJECT = 32
UNWILLING = 53
NAMING_VIOLATION = 64
OBJECT_CLASS_VIOLATION = 65
NOT_ALLOWED_ON_RDN = 67
ENTRY_ALREADY_EXISTS = 68

MAILBOX_CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson", "mssMailbox"]
PERSON_CLASSES = {"person", "organizationalperson", "inetorgperson"}
CERT_ATTRS = {"userCertificate;binary": "encryption", "userSMIMECertificate;binary": "signature"}
MULTI = {"objectClass", *CERT_ATTRS}
ATTRIBUTES = [
    "objectClass", "mail", "cn", "sn", "givenName", "displayName", "description", "ou",
    "rppsId", "nationalId", "professionCode", "professionLabel", "specialtyCode",
    "mailboxType", "unlisted", "preferredRank", "acceptsDematerialised",
    "o", "l", "postalCode", "street", "finessId", "siretId", *CERT_ATTRS,
]
CANON = {a.lower(): a for a in ATTRIBUTES}
# Certificates are binary whatever the transfer option says (RFC 4523 section 2.1).
CANON["usercertificate"] = "userCertificate;binary"
CANON["usersmimecertificate"] = "userSMIMECertificate;binary"
CLASSES = {c.lower(): c for c in MAILBOX_CLASSES}

Attrs = dict[str, list[bytes]]


class EntryError(ValueError):
    """An entry we cannot store, with the LDAP result code that says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8")


def normalize(raw: Iterable[tuple[Any, Iterable[Any]]], *, strict: bool) -> Attrs:
    """(description, values) pairs -> {canonical name: [bytes]}; unknown descriptions are an error
    (strict) or dropped."""
    out: Attrs = {}
    for desc, values in raw:
        name = desc.decode() if isinstance(desc, bytes) else str(desc)
        canon = CANON.get(name.lower())
        if canon is None:
            if strict:
                raise EntryError(UNDEFINED_ATTRIBUTE_TYPE,
                                 f"attribute {name} is not in our schema (see cn=subschema)")
            continue
        bucket = out.setdefault(canon, [])
        for v in values:
            bv = _b(v)
            if bv not in bucket:
                bucket.append(bv)
    return {k: v for k, v in out.items() if v}


@dataclass
class Record:
    """One mailbox entry as the models see it."""

    address: str
    bal_type: str
    display_name: str | None = None
    description: str | None = None
    service: str | None = None
    unlisted: bool = False
    preferred_rank: int = 1
    dematerialised: bool = True
    person: dict[str, Any] | None = None  # DirPerson columns (national_id included)
    structure: dict[str, Any] | None = None  # DirStructure columns (tech_id included)
    certs: list[tuple[str, bytes]] = field(default_factory=list)

    def digest(self) -> str:
        d = asdict(self)
        d["certs"] = sorted((u, hashlib.sha256(c).hexdigest()) for u, c in self.certs)
        return hashlib.blake2b(repr(sorted(d.items())).encode(), digest_size=8).hexdigest()


def _text(attrs: Attrs, name: str) -> str | None:
    vals = attrs.get(name)
    if not vals:
        return None
    if len(vals) > 1 and name not in MULTI:
        raise EntryError(CONSTRAINT_VIOLATION, f"{name} takes a single value, got {len(vals)}")
    try:
        v = vals[0].decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise EntryError(INVALID_SYNTAX, f"{name} is not UTF-8 text") from exc
    return v or None


def _bool(attrs: Attrs, name: str, default: bool) -> bool:
    v = _text(attrs, name)
    if v is None:
        return default
    if v.upper() not in ("TRUE", "FALSE"):  # RFC 4517 section 3.3.3
        raise EntryError(INVALID_SYNTAX, f"{name} must be TRUE or FALSE, got {v!r}")
    return v.upper() == "TRUE"


def _digest(*values: Any) -> str:
    return hashlib.blake2b("\x1f".join("" if v is None else str(v) for v in values).encode(),
                           digest_size=8).hexdigest()


def to_record(attrs: Attrs, *, strict: bool) -> Record:
    """Validate an entry's attributes and map them to a Record (see the module docstring)."""
    classes = [c.decode("utf-8", "replace") for c in attrs.get("objectClass", [])]
    lower = {c.lower() for c in classes}
    if strict:
        if not classes:
            raise EntryError(OBJECT_CLASS_VIOLATION, "the entry has no objectClass")
        unknown = [c for c in classes if c.lower() not in CLASSES]
        if unknown:
            raise EntryError(OBJECT_CLASS_VIOLATION,
                             f"unknown objectClass {', '.join(unknown)} (mailbox entries are "
                             f"{' / '.join(MAILBOX_CLASSES)})")
        if "mssmailbox" not in lower:
            raise EntryError(OBJECT_CLASS_VIOLATION, "entries under ou=mailboxes need objectClass mssMailbox")
        must = ["mail", "mailboxType"] + (["sn", "cn"] if lower & PERSON_CLASSES else [])
        missing = [a for a in must if not attrs.get(a)]
        if missing:
            raise EntryError(OBJECT_CLASS_VIOLATION, f"missing required attribute {', '.join(missing)}")
    mail = _text(attrs, "mail")
    if mail is None:
        raise EntryError(OBJECT_CLASS_VIOLATION, "missing required attribute mail")
    try:
        address = validate_mail(mail)
    except IdentifierError as exc:
        raise EntryError(INVALID_SYNTAX, str(exc)) from exc
    rpps, nat = _text(attrs, "rppsId"), _text(attrs, "nationalId")
    bal = _text(attrs, "mailboxType")
    bal = bal.upper() if bal else ("PER" if rpps or nat else "ORG")
    if bal not in BAL_TYPES:
        raise EntryError(INVALID_SYNTAX, f"mailboxType must be one of {', '.join(BAL_TYPES)}, got {bal!r}")
    rank_s = _text(attrs, "preferredRank") or "1"
    if not rank_s.isdigit() or int(rank_s) < 1:
        raise EntryError(INVALID_SYNTAX, f"preferredRank must be a number from 1 (preferred), got {rank_s!r}")
    cn = _text(attrs, "cn")
    display = _text(attrs, "displayName") or cn
    if display and display.lower() == address.lower():
        display = None
    rec = Record(address=address, bal_type=bal, display_name=display,
                 description=_text(attrs, "description"), service=_text(attrs, "ou"),
                 unlisted=_bool(attrs, "unlisted", False), preferred_rank=int(rank_s),
                 dematerialised=_bool(attrs, "acceptsDematerialised", True))
    try:
        if rpps or nat:
            if rpps:
                ident, id_type = validate_rpps(rpps), "RPPS"
                if nat and nat != national_id("RPPS", ident):
                    raise EntryError(CONSTRAINT_VIOLATION, f"nationalId {nat} does not match rppsId {rpps}")
            elif nat and nat[:1] == "0":
                ident, id_type = validate_adeli(nat[1:]), "ADELI"
            elif nat and nat[:1] == "8":
                ident, id_type = validate_rpps(nat[1:]), "RPPS"
            else:
                raise EntryError(INVALID_SYNTAX, f"nationalId must be 8+RPPS or 0+ADELI, got {nat!r}")
            family = _text(attrs, "sn") or (cn.split()[-1] if cn else ident)
            given = _text(attrs, "givenName")
            rec.person = {"id_type": id_type, "ident": ident, "national_id": national_id(id_type, ident),
                          "family_name": family, "family_lc": family.lower(), "given_name": given,
                          "given_lc": given.lower() if given else None,
                          "profession_code": _text(attrs, "professionCode"),
                          "profession_label": _text(attrs, "professionLabel"),
                          "specialty_code": _text(attrs, "specialtyCode")}
        name, finess, siret = _text(attrs, "o"), _text(attrs, "finessId"), _text(attrs, "siretId")
        if name or finess or siret:
            finess = validate_finess(finess) if finess else None
            siret = validate_siret(siret) if siret else None
            city = _text(attrs, "l")
            if not name:
                if strict:
                    raise EntryError(OBJECT_CLASS_VIOLATION, "a structure (finessId / siretId) needs its name in o")
                name = finess or siret or ""
            tech = f"F{finess}" if finess else (f"S{siret}" if siret else "L" + _digest(name.lower(),
                                                                                         (city or "").lower()))
            rec.structure = {"tech_id": tech, "name": name, "name_lc": name.lower(), "finess": finess,
                             "siret": siret, "city": city, "city_lc": city.lower() if city else None,
                             "postal_code": _text(attrs, "postalCode"), "street": _text(attrs, "street")}
    except IdentifierError as exc:
        raise EntryError(INVALID_SYNTAX, str(exc)) from exc
    for attr, usage in CERT_ATTRS.items():
        rec.certs += [(usage, der) for der in attrs.get(attr, [])]
    return rec


# --- database -----------------------------------------------------------------------------

def find_mailbox(sess: Any, address: str) -> DirMailbox | None:
    return sess.scalar(select(DirMailbox).where(DirMailbox.address_lc == address.lower()))


def _upsert(sess: Any, model: Any, key: str, values: dict[str, Any], source: str, partial: bool) -> int:
    obj = sess.scalar(select(model).where(getattr(model, key) == values[key]).order_by(model.id).limit(1))
    if obj is None:
        obj = model(source=source, **values)
        sess.add(obj)
        sess.flush()
    else:
        for k, v in values.items():
            if v is not None or not partial:
                setattr(obj, k, v)
    return obj.id


def apply(sess: Any, rec: Record, *, source: str, mode: str, partial: bool = False,
          import_hash: str | None = None) -> tuple[str, DirMailbox]:
    """Write `rec`: mode "add" (the address must be new: entryAlreadyExists), "replace" (it must
    exist: noSuchObject) or "upsert". `partial`: a person's or structure's attribute the entry does
    not carry keeps its stored value (the sync), else it is cleared (an administrator's write).
    Returns ("added" | "updated" | "unchanged", mailbox)."""
    m = find_mailbox(sess, rec.address)
    if m is not None and mode == "add":
        raise EntryError(ENTRY_ALREADY_EXISTS, f"a mailbox {rec.address} already exists in the directory")
    if m is None and mode == "replace":
        raise EntryError(NO_SUCH_OBJECT, f"no mailbox {rec.address} in the directory")
    if m is not None and import_hash is not None and m.import_hash == import_hash:
        return "unchanged", m
    person_id = _upsert(sess, DirPerson, "national_id", rec.person, source, partial) if rec.person else None
    structure_id = (_upsert(sess, DirStructure, "tech_id", rec.structure, source, partial)
                    if rec.structure else None)
    fields = {"person_id": person_id, "structure_id": structure_id, "display_name": rec.display_name,
              "display_lc": rec.display_name.lower() if rec.display_name else None,
              "description": rec.description, "service": rec.service, "unlisted": rec.unlisted,
              "preferred_rank": rec.preferred_rank, "dematerialised": rec.dematerialised,
              "import_hash": import_hash}
    status = "updated"
    if m is None:
        m = DirMailbox(address=rec.address, address_lc=rec.address.lower(), bal_type=rec.bal_type,
                       source=source, **fields)
        sess.add(m)
        status = "added"
    else:
        if m.bal_type != rec.bal_type:
            raise EntryError(UNWILLING, f"the type of mailbox {rec.address} never changes "
                                        f"({m.bal_type} to {rec.bal_type}): delete and add it again")
        for k, v in fields.items():
            setattr(m, k, v)
    sess.flush()
    _set_certificates(sess, m.id, rec.certs)
    return status, m


def _set_certificates(sess: Any, mailbox_id: int, certs: list[tuple[str, bytes]]) -> None:
    want = {hashlib.sha256(der).hexdigest(): (usage, der) for usage, der in certs}
    have = {c.sha256: c for c in sess.scalars(select(DirCertificate).where(DirCertificate.mailbox_id == mailbox_id))}
    for sha, c in have.items():
        if sha not in want or want[sha][0] != c.usage:
            sess.delete(c)
    sess.flush()
    for sha, (usage, der) in want.items():
        if sha in have and have[sha].usage == usage:
            continue
        other = sess.scalar(select(DirCertificate).where(DirCertificate.sha256 == sha))
        if other is not None:
            raise EntryError(CONSTRAINT_VIOLATION, "this certificate is already published on another mailbox")
        sess.add(DirCertificate(mailbox_id=mailbox_id, usage=usage, der=der, sha256=sha))
    sess.flush()


def remove_mailbox(sess: Any, m: DirMailbox) -> None:
    sess.execute(delete(DirCertificate).where(DirCertificate.mailbox_id == m.id))
    sess.delete(m)
    sess.flush()


def view(m: DirMailbox) -> Attrs:
    """The full (administrator's) attributes of a mailbox entry, as `to_record` reads them back."""
    a: dict[str, Any] = {"objectClass": MAILBOX_CLASSES, "mail": [m.address], "mailboxType": [m.bal_type],
                         "cn": [m.display_name or m.address], "preferredRank": [str(m.preferred_rank)],
                         "unlisted": ["TRUE" if m.unlisted else "FALSE"],
                         "acceptsDematerialised": ["TRUE" if m.dematerialised else "FALSE"]}
    # The display name is cn only (displayName is accepted on writes and wins over cn there).
    opt: dict[str, Any] = {"description": m.description, "ou": m.service}
    p, s = m.person, m.structure
    if p is not None:
        opt.update({"sn": p.family_name, "givenName": p.given_name, "nationalId": p.national_id,
                    "rppsId": p.ident if p.id_type == "RPPS" else None, "professionCode": p.profession_code,
                    "professionLabel": p.profession_label, "specialtyCode": p.specialty_code})
    else:
        opt["sn"] = m.display_name or m.address
    if s is not None:
        opt.update({"o": s.name, "l": s.city, "postalCode": s.postal_code, "street": s.street,
                    "finessId": s.finess, "siretId": s.siret})
    a.update({k: [v] for k, v in opt.items() if v})
    for c in m.certificates:
        attr = next(k for k, u in CERT_ATTRS.items() if u == c.usage)
        a.setdefault(attr, []).append(c.der)
    return {k: [_b(v) for v in vals] for k, vals in a.items()}


def modify(attrs: Attrs, changes: Iterable[tuple[int, str, list[bytes]]]) -> Attrs:
    """RFC 4511 section 4.6 modifications (0 add, 1 delete, 2 replace) on a copy of `attrs`."""
    out = {k: list(v) for k, v in attrs.items()}
    for op, desc, values in changes:
        name = CANON.get(desc.lower())
        if name is None:
            raise EntryError(UNDEFINED_ATTRIBUTE_TYPE, f"attribute {desc} is not in our schema (see cn=subschema)")
        cur = out.get(name, [])
        if op == 0:
            dup = [v for v in values if v in cur]
            if dup:
                raise EntryError(20, f"{name} already has the value {dup[0].decode('utf-8', 'replace')}")
            out[name] = cur + list(values)
        elif op == 1:
            if not cur:
                raise EntryError(16, f"the entry has no {name}")  # noSuchAttribute
            if values:
                absent = [v for v in values if v not in cur]
                if absent:
                    raise EntryError(16, f"{name} has no value {absent[0].decode('utf-8', 'replace')}")
                out[name] = [v for v in cur if v not in values]
            else:
                out[name] = []
        elif op == 2:
            out[name] = list(values)
        else:
            raise EntryError(2, f"unknown modify operation {op}")  # protocolError
    return {k: v for k, v in out.items() if v}
