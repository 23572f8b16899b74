"""LDIF (RFC 2849) export and import of the directory.

The LDIF is the LDAP view (directory/server.py): the base entry, `ou=mailboxes,<base>`, and
one `mail=<address>,ou=mailboxes,<base>` entry per mailbox carrying its owner's and its
structure's attributes. Values that are not SAFE-STRINGs (non-ASCII, binary, leading space,
colon or `<`, trailing space) are base64 (`attr:: ...`); lines are folded at 76 columns.
Certificates: encryption -> `userCertificate;binary`, signature -> `userSMIMECertificate;binary`
(our choice, docs/directory.md). `formatting` and `parsing` below are pure; `export_ldif` and
`import_ldif` stream from / to the database.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from directory.identifiers import IdentifierError, national_id, validate_mail, validate_rpps
from directory.models import BAL_TYPES, DirCertificate, DirMailbox, DirPerson, DirStructure

WIDTH = 76
MAILBOX_CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson", "mssMailbox"]
CERT_ATTRS = {"encryption": "userCertificate;binary", "signature": "userSMIMECertificate;binary"}


# --- formatting (pure) ------------------------------------------------------------------

def _safe(value: str) -> bool:
    if not value:
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return value.isascii() and not any(c in value for c in "\0\r\n")


def _fold(line: str) -> str:
    if len(line) <= WIDTH:
        return line + "\n"
    out = [line[:WIDTH]]
    rest = line[WIDTH:]
    while rest:
        out.append(" " + rest[:WIDTH - 1])
        rest = rest[WIDTH - 1:]
    return "\n".join(out) + "\n"


def format_line(attr: str, value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return _fold(f"{attr}:: {base64.b64encode(value).decode()}")
        if attr.endswith(";binary"):
            return _fold(f"{attr}:: {base64.b64encode(value).decode()}")
        value = text
    if _safe(value):
        return _fold(f"{attr}: {value}")
    return _fold(f"{attr}:: {base64.b64encode(value.encode()).decode()}")


def format_entry(dn: str, attrs: dict[str, list[Any]]) -> str:
    parts = [format_line("dn", dn)]
    for name, values in attrs.items():
        parts.extend(format_line(name, v) for v in values)
    return "".join(parts) + "\n"


def escape_rdn_value(value: str) -> str:
    """RFC 4514 section 2.4."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (i == 0 and ch in " #") or (i == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


# --- parsing (pure) ---------------------------------------------------------------------

@dataclass
class LdifEntry:
    line: int  # line number of the `dn:` line
    dn: str
    attrs: dict[str, list[str | bytes]] = field(default_factory=dict)  # lowercased names
    error: str | None = None

    def first(self, name: str) -> str | None:
        v = self.attrs.get(name.lower())
        if not v:
            return None
        x = v[0]
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else x


def _unfolded(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Logical lines with the number of their first physical line; "" separates entries."""
    current: str | None = None
    start = 0
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if line.startswith(" ") and current is not None:
            current += line[1:]
            continue
        if current is not None:
            yield start, current
            current = None
        if line.startswith("#"):
            continue
        if line == "":
            yield n, ""
            continue
        current, start = line, n
    if current is not None:
        yield start, current


def parse_ldif(lines: Iterable[str]) -> Iterator[LdifEntry]:
    """Entries of an LDIF content stream (RFC 2849), one at a time; errors are per entry."""
    entry: LdifEntry | None = None
    for n, line in _unfolded(lines):
        if line == "":
            if entry is not None:
                yield entry
                entry = None
            continue
        name, sep, rest = line.partition(":")
        if not sep:
            if entry is not None:
                entry.error = entry.error or f"line {n}: no ':' in {line[:40]!r}"
            continue
        if rest.startswith(":"):
            try:
                value: str | bytes = base64.b64decode(rest[1:].strip(), validate=True)
            except ValueError:
                value = b""
                if entry is not None:
                    entry.error = entry.error or f"line {n}: bad base64 value of {name}"
        elif rest.startswith("<"):
            value = ""
            if entry is not None:
                entry.error = entry.error or f"line {n}: URL values ({name}:<) are not supported"
        else:
            value = rest[1:] if rest.startswith(" ") else rest
            value = value.lstrip(" ")
        key = name.strip().lower()
        if entry is None:
            if key == "version":
                continue
            if key != "dn":
                entry = LdifEntry(n, "", error=f"line {n}: an entry must start with dn:")
                continue
            dn = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            entry = LdifEntry(n, dn)
            continue
        if key == "changetype":
            if value != "add":
                entry.error = entry.error or f"changetype {value!r} is not supported (only add)"
            continue
        if key in ("userCertificate".lower(), "userSMIMECertificate".lower()):
            key += ";binary"
        if isinstance(value, bytes) and not key.endswith(";binary"):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                entry.error = entry.error or f"line {n}: {name} is not UTF-8"
        entry.attrs.setdefault(key, []).append(value)
    if entry is not None:
        yield entry


# --- export -----------------------------------------------------------------------------

def _base_entries(base_dn: str) -> Iterator[tuple[str, dict[str, list[Any]]]]:
    first = base_dn.split(",")[0]
    attr, _, value = first.partition("=")
    attr = attr.strip().lower()
    if attr == "dc":
        attrs: dict[str, list[Any]] = {"objectClass": ["top", "dcObject", "organization"], "dc": [value], "o": [value]}
    elif attr == "ou":
        attrs = {"objectClass": ["top", "organizationalUnit"], "ou": [value]}
    else:
        attrs = {"objectClass": ["top", "organization"], "o": [value]}
    yield base_dn, attrs
    yield f"ou=mailboxes,{base_dn}", {"objectClass": ["top", "organizationalUnit"], "ou": ["mailboxes"]}


def _bool(v: bool) -> str:
    return "TRUE" if v else "FALSE"


def mailbox_entries(store: Any, base_dn: str, page: int = 1000) -> Iterator[tuple[str, dict[str, list[Any]]]]:
    """(dn, attributes) of every mailbox, unlisted ones included (an administrator's export)."""
    p, s = aliased(DirPerson), aliased(DirStructure)
    cols = (DirMailbox.id, DirMailbox.address, DirMailbox.address_lc, DirMailbox.bal_type,
            DirMailbox.display_name, DirMailbox.description, DirMailbox.service, DirMailbox.unlisted,
            DirMailbox.preferred_rank, DirMailbox.dematerialised, p.family_name, p.given_name, p.ident,
            p.id_type, p.national_id, p.profession_code, p.profession_label, p.specialty_code, s.name,
            s.city, s.postal_code, s.street, s.finess, s.siret)
    after = ""
    while True:
        q = (select(*cols).outerjoin(p, DirMailbox.person_id == p.id).outerjoin(s, DirMailbox.structure_id == s.id)
             .where(DirMailbox.address_lc > after).order_by(DirMailbox.address_lc).limit(page))
        with store.db.read() as sess:
            rows = sess.execute(q).all()
            certs: dict[int, list[tuple[str, bytes]]] = {}
            if rows:
                cq = (select(DirCertificate.mailbox_id, DirCertificate.usage, DirCertificate.der)
                      .where(DirCertificate.mailbox_id.in_([r.id for r in rows])).order_by(DirCertificate.id))
                for mid, usage, der in sess.execute(cq):
                    certs.setdefault(mid, []).append((usage, der))
        if not rows:
            return
        for r in rows:
            attrs: dict[str, list[Any]] = {
                "objectClass": list(MAILBOX_CLASSES), "mail": [r.address],
                "cn": [r.display_name or r.address], "sn": [r.family_name or r.display_name or r.address],
            }
            optional: list[tuple[str, Any]] = [
                ("givenName", r.given_name), ("displayName", r.display_name),
                ("rppsId", r.ident if r.id_type == "RPPS" else None), ("nationalId", r.national_id),
                ("professionCode", r.profession_code), ("professionLabel", r.profession_label),
                ("specialtyCode", r.specialty_code), ("o", r.name), ("l", r.city), ("postalCode", r.postal_code),
                ("street", r.street), ("finessId", r.finess), ("siretId", r.siret), ("ou", r.service),
                ("description", r.description)]
            attrs.update({k: [v] for k, v in optional if v})
            attrs["mailboxType"] = [r.bal_type]
            attrs["preferredRank"] = [str(r.preferred_rank)]
            attrs["acceptsDematerialised"] = [_bool(r.dematerialised)]
            attrs["unlisted"] = [_bool(r.unlisted)]
            for usage, der in certs.get(r.id, []):
                attrs.setdefault(CERT_ATTRS.get(usage, CERT_ATTRS["encryption"]), []).append(der)
            yield f"mail={escape_rdn_value(r.address)},ou=mailboxes,{base_dn}", attrs
        after = rows[-1].address_lc


def export_ldif(store: Any, out: IO[str], base_dn: str) -> int:
    """Write the directory as LDIF to `out`; returns the number of mailbox entries."""
    out.write("version: 1\n\n")
    for dn, attrs in _base_entries(base_dn):
        out.write(format_entry(dn, attrs))
    n = 0
    for dn, attrs in mailbox_entries(store, base_dn):
        out.write(format_entry(dn, attrs))
        n += 1
    return n


# --- import -----------------------------------------------------------------------------

def _digest(*values: Any) -> str:
    return hashlib.blake2b("\x1f".join("" if v is None else str(v) for v in values).encode(), digest_size=8).hexdigest()


def _upsert_entry(sess: Any, e: LdifEntry) -> tuple[str, str]:
    """Add or update one mailbox entry with its person and structure: ('added'|'updated', address)."""
    address = validate_mail(e.first("mail") or "")
    bal_type = (e.first("mailboxType") or "PER").upper()
    if bal_type not in BAL_TYPES:
        raise ValueError(f"mailboxType must be one of {', '.join(BAL_TYPES)}, got {bal_type!r}")
    person_id = structure_id = None
    rpps, nat = e.first("rppsId"), e.first("nationalId")
    if rpps or nat:
        if rpps:
            ident, id_type = validate_rpps(rpps), "RPPS"
        elif nat and nat[0] == "0" and len(nat) == 10:
            ident, id_type = nat[1:], "ADELI"
        else:
            ident, id_type = validate_rpps(nat[1:] if nat else ""), "RPPS"
        nid = national_id(id_type, ident)
        family = e.first("sn") or ident
        given = e.first("givenName")
        fields = {"id_type": id_type, "ident": ident, "family_name": family, "family_lc": family.lower(),
                  "given_name": given, "given_lc": given.lower() if given else None,
                  "profession_code": e.first("professionCode"), "profession_label": e.first("professionLabel"),
                  "specialty_code": e.first("specialtyCode")}
        p = sess.scalar(select(DirPerson).where(DirPerson.national_id == nid))
        if p is None:
            p = DirPerson(national_id=nid, source="ldif", **fields)
            sess.add(p)
        else:
            for k, v in fields.items():
                setattr(p, k, v)
        sess.flush()
        person_id = p.id
    name = e.first("o")
    if name:
        finess, siret, city = e.first("finessId"), e.first("siretId"), e.first("l")
        tech = f"F{finess}" if finess else (f"S{siret}" if siret else "L" + _digest(name.lower(), (city or "").lower()))
        fields = {"name": name, "name_lc": name.lower(), "finess": finess, "siret": siret, "city": city,
                  "city_lc": city.lower() if city else None, "postal_code": e.first("postalCode"),
                  "street": e.first("street")}
        st = sess.scalar(select(DirStructure).where(DirStructure.tech_id == tech))
        if st is None:
            st = DirStructure(tech_id=tech, source="ldif", **fields)
            sess.add(st)
        else:
            for k, v in fields.items():
                setattr(st, k, v)
        sess.flush()
        structure_id = st.id
    display = e.first("displayName") or e.first("cn")
    if display == address:
        display = None
    rank = e.first("preferredRank") or "1"
    if not rank.isdigit():
        raise ValueError(f"preferredRank must be a number, got {rank!r}")
    fields = {"person_id": person_id, "structure_id": structure_id, "display_name": display,
              "display_lc": display.lower() if display else None, "service": e.first("ou"),
              "description": e.first("description"), "preferred_rank": int(rank),
              "unlisted": (e.first("unlisted") or "FALSE").upper() == "TRUE",
              "dematerialised": (e.first("acceptsDematerialised") or "TRUE").upper() == "TRUE"}
    m = sess.scalar(select(DirMailbox).where(DirMailbox.address_lc == address.lower()))
    status = "updated"
    if m is None:
        m = DirMailbox(address=address, address_lc=address.lower(), bal_type=bal_type, source="ldif", **fields)
        sess.add(m)
        status = "added"
    else:
        if m.bal_type != bal_type:
            raise ValueError(f"the type of mailbox {address} cannot change ({m.bal_type} to {bal_type})")
        for k, v in fields.items():
            setattr(m, k, v)
    sess.flush()
    for usage, attr in CERT_ATTRS.items():
        for der in e.attrs.get(attr.lower(), []):
            der_b = der if isinstance(der, bytes) else der.encode()
            sha = hashlib.sha256(der_b).hexdigest()
            if sess.scalar(select(DirCertificate.id).where(DirCertificate.sha256 == sha)) is None:
                sess.add(DirCertificate(mailbox_id=m.id, usage=usage, der=der_b, sha256=sha))
    return status, address


def import_ldif(store: Any, path: str | Path, *, batch_size: int = 1000,
                progress: Callable[[int], None] | None = None) -> Any:
    """Add (or update) the mailbox entries of an LDIF file; other entries are skipped.
    Each rejected entry is reported with the line of its `dn:` and the reason."""
    import time

    from directory.importers.formats import Rejected
    from directory.importers.run import ImportReport

    t0 = time.perf_counter()
    report = ImportReport(kind="ldif", filename=str(path), encoding="utf-8")
    counts = report.counts("mailboxes")
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        consumed = [0]

        def lines() -> Iterator[str]:
            for line in f:
                consumed[0] += len(line)
                yield line

        entries = parse_ldif(lines())
        done = False
        while not done:
            with store.db.write() as sess:
                for i, e in enumerate(entries):
                    if e.error is None and not (e.attrs.get("mail") and (
                            "mssmailbox" in [str(c).lower() for c in e.attrs.get("objectclass", [])]
                            or "mailboxtype" in e.attrs)):
                        continue  # base, ou and other non-mailbox entries
                    report.read += 1
                    if e.error:
                        report.reject(Rejected(e.line, e.error))
                    else:
                        try:
                            with sess.begin_nested():
                                status, _ = _upsert_entry(sess, e)
                        except (ValueError, IdentifierError) as exc:
                            report.reject(Rejected(e.line, str(exc)))
                        else:
                            counts.added += status == "added"
                            counts.updated += status == "updated"
                    if i + 1 >= batch_size:
                        break
                else:
                    done = True
            if progress:
                progress(consumed[0])
                consumed[0] = 0
    report.seconds = time.perf_counter() - t0
    return report
