"""LDIF (RFC 2849): formatting (base64, folding), parsing, and export -> import -> export round
trip on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io

from sqlalchemy import text as sql_text

from directory import api
from directory import store as dstore
from directory.filters import parse
from directory.ldif import export_ldif, format_line, import_ldif, parse_ldif

BASE = "o=mss,c=fr"


def test_format_line_base64_and_folding():
    assert format_line("cn", "Jean Martin") == "cn: Jean Martin\n"
    assert format_line("cn", "Hélène") == f"cn:: {base64.b64encode('Hélène'.encode()).decode()}\n"
    assert format_line("cn", " lead") .startswith("cn:: ")
    assert format_line("cn", "trail ").startswith("cn:: ")
    assert format_line("cn", ":colon").startswith("cn:: ")
    assert format_line("description", "a\nb").startswith("description:: ")
    long = format_line("description", "x" * 200)
    lines = long.rstrip("\n").split("\n")
    assert all(len(line) <= 76 for line in lines) and all(line.startswith(" ") for line in lines[1:])
    [e] = list(parse_ldif(io.StringIO("dn: mail=a@b.example,o=x\n" + long)))
    assert e.first("description") == "x" * 200
    der = bytes(range(256))
    [e] = list(parse_ldif(io.StringIO("dn: o=x\n" + format_line("userCertificate;binary", der))))
    assert e.attrs["usercertificate;binary"] == [der]


def test_parse_errors_are_per_entry():
    text = ("version: 1\n\n# comment\ndn: mail=a@b.example,o=x\nmail: a@b.example\n\n"
            "dn: mail=c@b.example,o=x\nchangetype: delete\n\n"
            "dn: mail=d@b.example,o=x\nphoto:< file:///etc/passwd\n")
    entries = list(parse_ldif(io.StringIO(text)))
    assert [(e.line, e.error) for e in entries] == [
        (4, None), (7, "changetype 'delete' is not supported (only add)"),
        (10, "line 11: URL values (photo:<) are not supported")]


def test_round_trip(store, tmp_path, db_url):
    from mssmail.store.service import Store

    sid = dstore.add_structure(store, tech_id="F1", name="Clinique Sainte-Hélène", finess="750000019",
                               city="Saint-Étienne", postal_code="42000", street="1 rue de la Paix")
    pid = dstore.add_person(store, ident="10003456786", family_name="Lefèvre", given_name="Zoé",
                            profession_code="10", profession_label="Médecin", specialty_code="SM54")
    dstore.add_mailbox(store, address="zoe.lefevre@a.example", bal_type="PER", person_id=pid,
                       structure_id=sid, display_name="Zoé Lefèvre", preferred_rank=2)
    dstore.add_mailbox(store, address="secret@a.example", bal_type="ORG", structure_id=sid,
                       service="Urgences", unlisted=True, dematerialised=False)
    dstore.add_mailbox(store, address="dui@a.example", bal_type="APP")
    api.add_certificate(store, "zoe.lefevre@a.example", "encryption", b"\x30\x82\x01\x00enc" + bytes(range(200)))
    api.add_certificate(store, "zoe.lefevre@a.example", "signature", b"\x30\x82\x01\x00sig")
    first = io.StringIO()
    assert export_ldif(store, first, BASE) == 3
    text = first.getvalue()
    assert "dn: mail=zoe.lefevre@a.example,ou=mailboxes,o=mss,c=fr\n" in text
    assert "userCertificate;binary:: " in text and "unlisted: TRUE" in text
    path = tmp_path / "export.ldif"
    path.write_text(text, encoding="utf-8")

    other_url = db_url.replace("mss.db", "other.db") if db_url.startswith("sqlite") else None
    if other_url is None:  # PostgreSQL: import back into the same (emptied) schema
        with store.db.write() as s:
            for table in ("dir_certificates", "dir_mailboxes", "dir_activities", "dir_persons", "dir_structures"):
                s.execute(sql_text(f"DELETE FROM {table}"))
        target = store
    else:
        target = Store(other_url, tmp_path / "blobs2", pool_size=2)
        target.migrate()
    report = import_ldif(target, path)
    assert (report.read, report.added, report.rejected_count) == (3, 3, 0)
    second = io.StringIO()
    export_ldif(target, second, BASE)
    assert second.getvalue() == text
    [e] = dstore.search(target, parse("(rppsId=10003456786)"))
    assert (e.given_name, e.structure, e.city, e.preferred_rank) == ("Zoé", "Clinique Sainte-Hélène",
                                                                      "Saint-Étienne", 2)
    assert api.certificates_for(target, "zoe.lefevre@a.example", "signature") == [b"\x30\x82\x01\x00sig"]
    again = import_ldif(target, path)  # idempotent: no new rows
    assert (again.added, again.updated) == (0, 3)
    if target is not store:
        target.close()


def test_import_rejects_bad_entries(store, tmp_path):
    path = tmp_path / "bad.ldif"
    path.write_text("dn: mail=ok@a.example,ou=mailboxes,o=mss,c=fr\nobjectClass: mssMailbox\nmail: ok@a.example\n"
                    "mailboxType: ORG\n\n"
                    "dn: mail=bad,ou=mailboxes,o=mss,c=fr\nobjectClass: mssMailbox\nmail: bad\n\n"
                    "dn: mail=r@a.example,ou=mailboxes,o=mss,c=fr\nobjectClass: mssMailbox\nmail: r@a.example\n"
                    "rppsId: 10003456787\n\n"
                    "dn: mail=t@a.example,ou=mailboxes,o=mss,c=fr\nobjectClass: mssMailbox\nmail: t@a.example\n"
                    "mailboxType: XYZ\n", encoding="utf-8")
    report = import_ldif(store, path)
    assert report.added == 1
    assert [(r.line, r.reason) for r in report.rejected] == [
        (6, "not a mail address: 'bad'"),
        (10, "RPPS 10003456787 has a wrong check digit (Luhn): expected 6"),
        (15, "mailboxType must be one of PER, ORG, APP, CAB, got 'XYZ'")]
