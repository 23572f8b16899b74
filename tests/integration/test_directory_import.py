"""`mss directory import / export / add-structure / modify / remove` on a real instance, then the
running LDAP server (`mss serve --only ldap`) answers ldapsearch for the imported entries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from directory.importers.synthetic import (
    ACTIVITY_HEADER,
    MSSANTE_HEADER,
    activity_line,
    finess,
    mssante_line,
    rpps,
)

pytestmark = pytest.mark.timeout(180)

BASE = "o=mss,c=fr"


def bad_check(ident: str) -> str:
    return ident[:-1] + str((int(ident[-1]) + 1) % 10)


def ldapsearch(inst, flt: str, *attrs: str) -> str:
    r = subprocess.run(["ldapsearch", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-LLL",
                        "-o", "ldif-wrap=no", "-b", BASE, flt, *attrs],
                       capture_output=True, text=True, timeout=30, env={**os.environ})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_import_then_ldapsearch(instance_factory, tmp_path):
    inst = instance_factory()
    activity = tmp_path / "PS_LibreAcces_Personne_activite_202611220000.txt"
    activity.write_bytes((ACTIVITY_HEADER
                          + activity_line(rpps_id=rpps(101), family="LEFÈVRE", given="Hélène", tech_id="R0000042",
                                          site_name="Centre de santé Pasteur", finess_site=finess(42),
                                          postal_code="42000", city="SAINT-ÉTIENNE")
                          + activity_line(rpps_id=bad_check(rpps(102)), family="FAUX")
                          + activity_line(rpps_id=rpps(103), family="BLANC", given="Noël")).encode("cp1252"))
    r = inst.mss("directory", "import", str(activity), "--json")
    report = json.loads(r.stdout)
    assert report["kind"] == "activity" and report["encoding"] == "windows-1252"
    assert (report["read"], report["rejected"]) == (3, 1)
    assert report["rejected_lines"][0]["line"] == 3 and "check digit" in report["rejected_lines"][0]["reason"]
    assert report["tables"]["persons"]["added"] == 2

    mss_file = tmp_path / "Extraction_Correspondance_MSSante_202611220000.txt"
    mss_file.write_text(MSSANTE_HEADER
                        + mssante_line(address="helene.lefevre@sante.example", rpps_id=rpps(101), family="LEFÈVRE",
                                       given="Hélène", structure_id="R0000042")
                        + mssante_line(address="accueil@sante.example", bal_type="ORG", structure_id="R0000042",
                                       service="Accueil")
                        + "PER|broken|\n", encoding="utf-8")
    r = inst.mss("directory", "import", str(mss_file))
    assert "mssante file" in r.stdout and "(utf-8)" in r.stdout
    assert "read 3, added 2, updated 0, removed 0, rejected 1" in r.stdout
    assert "rejected line 4: wrong column count: 2 instead of 31" in r.stdout
    again = json.loads(inst.mss("directory", "import", str(mss_file), "--json").stdout)
    assert (again["added"], again["updated"], again["removed"]) == (0, 0, 0)

    r = inst.mss("directory", "import", str(tmp_path / "nothing.txt"), check=False)
    assert r.returncode == 2  # click: the file does not exist
    bogus = tmp_path / "bogus.txt"
    bogus.write_text("Nom|Prénom|\nA|B|\n")
    r = inst.mss("directory", "import", str(bogus), check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "unrecognised header" in r.stderr

    if shutil.which("ldapsearch"):
        inst.start("ldap")
        try:
            out = ldapsearch(inst, "(mail=helene.lefevre@sante.example)")
            assert "dn: mail=helene.lefevre@sante.example,ou=mailboxes,o=mss,c=fr" in out
            assert f"rppsId: {rpps(101)}" in out and "finessId: " + finess(42) in out
            assert "sn:: " in out  # LEFÈVRE, base64 in LDIF
            out = ldapsearch(inst, "(o=centre de santé*)", "mail")
            assert sorted(line for line in out.splitlines() if line.startswith("mail:")) == [
                "mail: accueil@sante.example", "mail: helene.lefevre@sante.example"]
        finally:
            inst.stop()

    # LDIF export, then add-structure / modify / remove with validated identifiers.
    ldif = tmp_path / "export.ldif"
    r = inst.mss("directory", "export", "--output", str(ldif))
    text = ldif.read_text()
    assert "dn: mail=accueil@sante.example,ou=mailboxes,o=mss,c=fr" in text and "exported" in r.stderr

    r = inst.mss("directory", "add-structure", "--name", "Clinique", "--finess", "750000018", check=False)
    assert r.returncode == 1 and "wrong key" in r.stderr
    inst.mss("directory", "add-structure", "--name", "Clinique du Parc", "--finess", finess(77),
             "--city", "Lyon", "--mail", "urgences@sante.example", "--service", "Urgences")
    inst.mss("directory", "modify", "helene.lefevre@sante.example", "--unlisted", "--preferred-rank", "2",
             "--structure", finess(77))
    shown = json.loads(inst.mss("directory", "show", "helene.lefevre@sante.example", "--json").stdout)
    assert (shown["unlisted"], shown["preferredRank"], shown["o"]) == (["TRUE"], ["2"], ["Clinique du Parc"])
    assert shown["dn"] == "mail=helene.lefevre@sante.example,ou=mailboxes,o=mss,c=fr"
    r = inst.mss("directory", "modify", "helene.lefevre@sante.example", "--family-name", "X", check=False)
    assert r.returncode == 1 and "--family-name cannot be changed on a mailbox" in r.stderr
    r = inst.mss("directory", "modify", bad_check(rpps(101)), "--given-name", "Y", check=False)
    assert r.returncode == 1 and "check digit" in r.stderr
    inst.mss("directory", "modify", rpps(101), "--given-name", "Hélène-Marie")
    shown = json.loads(inst.mss("directory", "show", "helene.lefevre@sante.example", "--json").stdout)
    assert shown["givenName"] == ["Hélène-Marie"]
    inst.mss("directory", "remove", "accueil@sante.example")
    r = inst.mss("directory", "remove", "accueil@sante.example", check=False)
    assert r.returncode == 1 and "no directory entry for accueil@sante.example" in r.stderr
    r = inst.mss("directory", "remove", "not@an@address", check=False)
    assert r.returncode == 1 and "not a mail address" in r.stderr


def test_readme_tour_shipped_samples_then_ldapsearch(instance_factory):
    """The README's directory step, on the sample files shipped in conf/samples/directory."""
    from pathlib import Path

    samples = Path(__file__).resolve().parents[2] / "conf" / "samples" / "directory"
    inst = instance_factory("mss.localhost")
    reports = [json.loads(inst.mss("directory", "import", str(samples / name), "--json").stdout)
               for name in ("PS_LibreAcces_Personne_activite_demo.txt", "Extraction_Correspondance_MSSante_demo.txt")]
    assert [(r["kind"], r["read"], r["rejected"]) for r in reports] == [("activity", 4, 1), ("mssante", 4, 1)]
    assert "check digit" in reports[0]["rejected_lines"][0]["reason"]
    assert reports[1]["rejected_lines"][0]["line"] == 5
    inst.start("ldap")
    found = ldapsearch(inst, "(mail=helene.lefevre@mss.localhost)", "rppsId", "finessId", "mailboxType")
    assert "rppsId: 10000005016" in found and "mailboxType: PER" in found and "finessId: 420005019" in found
    org = ldapsearch(inst, "(&(l=saint-*)(mailboxType=ORG))", "mail")
    assert org.count("dn: ") == 1 and "mail: secretariat.tilleuls@mss.localhost" in org
