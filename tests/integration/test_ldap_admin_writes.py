"""Administrators' writes over LDAP (`mss serve --only ldap`) with OpenLDAP's ldapadd / ldapmodify /
ldapdelete / ldapmodrdn and with ldap3; anonymous and non-admin writes refused; search time limit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading

import pytest

from tests.support.instance import MssInstance

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("ldapmodify") is None and not os.environ.get("CI"),
                                 reason="ldap-utils not installed")]

BASE = "o=mss,c=fr"
OU = f"ou=mailboxes,{BASE}"


def _admin(inst: MssInstance) -> None:
    m = re.search(r"directory administrator: (\S+) password (\S+)", inst.init_output)
    inst.admin_dn, inst.admin_password = m.group(1), m.group(2)


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    inst = MssInstance(tmp_path_factory.mktemp("ldapw") / "a.example", "a.example")
    _admin(inst)
    inst.start("ldap")
    yield inst
    inst.stop()


def _env(inst):
    return {**os.environ, "LDAPTLS_CACERT": str(inst.ca_file)}


def tool(inst, cmd, ldif="", *args, bind="admin"):
    """Run an ldap-utils command; bind = 'admin', 'anon' or (dn, password). Returns CompletedProcess."""
    argv = [cmd, "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x"]
    if bind == "admin":
        argv += ["-ZZ", "-D", inst.admin_dn, "-w", inst.admin_password]
    elif bind != "anon":
        argv += ["-ZZ", "-D", bind[0], "-w", bind[1]]
    r = subprocess.run([*argv, *args], input=ldif, capture_output=True, text=True, timeout=30, env=_env(inst))
    r.stderr += r.stdout  # ldapmodrdn reports its errors on stdout
    return r


def search(inst, flt, *attrs, admin=True):
    argv = ["ldapsearch", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-LLL", "-o", "ldif-wrap=no",
            "-b", BASE]
    if admin:
        argv += ["-ZZ", "-D", inst.admin_dn, "-w", inst.admin_password]
    r = subprocess.run([*argv, flt, *attrs], capture_output=True, text=True, timeout=30, env=_env(inst))
    assert r.returncode == 0, r.stderr
    return r.stdout


PERSON = f"""dn: mail=lea.blanc@a.example,{OU}
objectClass: top
objectClass: inetOrgPerson
objectClass: mssMailbox
mail: lea.blanc@a.example
cn: Léa Blanc
sn: Blanc
givenName: Léa
mailboxType: PER
rppsId: 10000000207
professionCode: 10
professionLabel: Médecin
o: Cabinet Blanc
l: Nantes
postalCode: 44000
preferredRank: 1
"""


def test_add_search_modify_rename_delete(inst):
    r = tool(inst, "ldapadd", PERSON)
    assert r.returncode == 0, r.stderr
    out = search(inst, "(rppsId=10000000207)", "mail", "sn", "givenName", "o", "l", "mailboxType")
    assert "mail: lea.blanc@a.example" in out and "sn: Blanc" in out and "o: Cabinet Blanc" in out
    assert "l: Nantes" in out and "mailboxType: PER" in out
    # The person and structure rows are searchable on their own indexed attributes.
    assert "lea.blanc@a.example" in search(inst, "(&(sn=bla*)(l=nantes))", "mail")

    r = tool(inst, "ldapadd", PERSON)
    assert r.returncode == 68, r.stderr  # entryAlreadyExists
    assert "already exists" in r.stderr

    r = tool(inst, "ldapmodify", f"""dn: mail=lea.blanc@a.example,{OU}
changetype: modify
replace: cn
cn: Dr Léa Blanc
-
replace: l
l: Rezé
-
add: description
description: consultations le matin
-
replace: preferredRank
preferredRank: 2
""")
    assert r.returncode == 0, r.stderr
    out = search(inst, "(mail=lea.blanc@a.example)", "cn", "l", "preferredRank")
    assert "preferredRank: 2" in out and "cn:: RHIgTMOpYSBCbGFuYw==" in out  # "Dr Léa Blanc", base64
    # description is stored (not published in searches): deleting it works once, then noSuchAttribute.
    delete_description = f"dn: mail=lea.blanc@a.example,{OU}\nchangetype: modify\ndelete: description\n"
    assert tool(inst, "ldapmodify", delete_description).returncode == 0
    assert tool(inst, "ldapmodify", delete_description).returncode == 16
    assert "lea.blanc@a.example" in search(inst, "(l=rez*)", "mail")

    # Liste rouge: once unlisted, anonymous searches no longer see the entry.
    r = tool(inst, "ldapmodify", f"dn: mail=lea.blanc@a.example,{OU}\nchangetype: modify\n"
                                 "replace: unlisted\nunlisted: TRUE\n")
    assert r.returncode == 0, r.stderr
    assert "lea.blanc" not in search(inst, "(sn=blanc)", "mail", admin=False)
    assert "unlisted: TRUE" in search(inst, "(sn=blanc)", "unlisted")

    r = tool(inst, "ldapmodrdn", "", "-r", f"mail=lea.blanc@a.example,{OU}", "mail=lea.blanc2@a.example")
    assert r.returncode == 0, r.stderr
    out = search(inst, "(rppsId=10000000207)", "mail")
    assert "mail: lea.blanc2@a.example" in out and "mail: lea.blanc@a.example" not in out
    r = tool(inst, "ldapmodrdn", "", "-r", f"mail=lea.blanc2@a.example,{OU}", "mail=jean.martin@a.example")
    assert r.returncode == 68, r.stderr
    r = tool(inst, "ldapmodrdn", "", f"mail=lea.blanc2@a.example,{OU}", "mail=lea.blanc3@a.example")
    assert r.returncode == 19 and "deleteoldrdn" in r.stderr  # one address per entry

    r = tool(inst, "ldapdelete", "", f"mail=lea.blanc2@a.example,{OU}")
    assert r.returncode == 0, r.stderr
    assert "lea.blanc" not in search(inst, "(rppsId=10000000207)", "mail")
    r = tool(inst, "ldapdelete", "", f"mail=lea.blanc2@a.example,{OU}")
    assert r.returncode == 32, r.stderr  # noSuchObject


@pytest.mark.parametrize(("ldif", "code", "words"), [
    # unknown objectClass
    (f"dn: mail=x1@a.example,{OU}\nobjectClass: mssMailbox\nobjectClass: posixAccount\n"
     "mail: x1@a.example\nmailboxType: ORG\n", 65, "posixAccount"),
    # missing MUST attribute of mssMailbox
    (f"dn: mail=x2@a.example,{OU}\nobjectClass: top\nobjectClass: mssMailbox\nmail: x2@a.example\n",
     65, "mailboxType"),
    # missing MUST of inetOrgPerson (sn)
    (f"dn: mail=x3@a.example,{OU}\nobjectClass: inetOrgPerson\nobjectClass: mssMailbox\ncn: X\n"
     "mail: x3@a.example\nmailboxType: PER\n", 65, "sn"),
    # no objectClass at all
    (f"dn: mail=x4@a.example,{OU}\nmail: x4@a.example\nmailboxType: ORG\n", 65, "objectClass"),
    # attribute outside the schema
    (f"dn: mail=x5@a.example,{OU}\nobjectClass: mssMailbox\nmail: x5@a.example\nmailboxType: ORG\n"
     "shoeSize: 42\n", 17, "shoeSize"),
    # bad RPPS check digit
    (f"dn: mail=x6@a.example,{OU}\nobjectClass: mssMailbox\nmail: x6@a.example\nmailboxType: PER\n"
     "rppsId: 10000000208\n", 21, "check digit"),
    # bad mailbox type
    (f"dn: mail=x7@a.example,{OU}\nobjectClass: mssMailbox\nmail: x7@a.example\nmailboxType: XYZ\n", 21, "PER"),
    # mail differs from the RDN
    (f"dn: mail=x8@a.example,{OU}\nobjectClass: mssMailbox\nmail: other@a.example\nmailboxType: ORG\n", 64, "RDN"),
    # parent does not exist
    (f"dn: mail=x9@a.example,ou=nothing,{BASE}\nobjectClass: mssMailbox\nmail: x9@a.example\nmailboxType: ORG\n",
     32, ""),
    # the base entry exists already
    (f"dn: {BASE}\nobjectClass: organization\no: mss\n", 68, ""),
])
def test_add_errors(inst, ldif, code, words):
    r = tool(inst, "ldapadd", ldif)
    assert r.returncode == code, r.stderr
    assert words in r.stderr


def test_modify_errors(inst):
    dn = f"mail=laboratoire@a.example,{OU}"
    cases = [
        ("replace: mailboxType\nmailboxType: PER\n", 53, "never changes"),
        ("replace: mail\nmail: labo2@a.example\n", 67, "modrdn"),
        ("replace: shoeSize\nshoeSize: 1\n", 17, "shoeSize"),
        ("delete: givenName\n", 16, "givenName"),  # noSuchAttribute
        ("delete: objectClass\nobjectClass: mssMailbox\n", 65, "mssMailbox"),
        ("replace: acceptsDematerialised\nacceptsDematerialised: maybe\n", 21, "TRUE or FALSE"),
    ]
    for change, code, words in cases:
        r = tool(inst, "ldapmodify", f"dn: {dn}\nchangetype: modify\n{change}")
        assert r.returncode == code, (change, r.stderr)
        assert words in r.stderr, (change, r.stderr)
    r = tool(inst, "ldapmodify", f"dn: mail=nobody@a.example,{OU}\nchangetype: modify\nreplace: cn\ncn: x\n")
    assert r.returncode == 32, r.stderr
    r = tool(inst, "ldapdelete", "", BASE)
    assert r.returncode == 66, r.stderr  # notAllowedOnNonLeaf
    # Nothing changed by the refused modifications.
    assert "mailboxType: ORG" in search(inst, "(mail=laboratoire@a.example)", "mailboxType")


def test_anonymous_and_non_admin_writes_refused(inst):
    ldif = f"dn: mail=intruder@a.example,{OU}\nobjectClass: mssMailbox\nmail: intruder@a.example\nmailboxType: ORG\n"
    owner = "jean.martin@a.example"
    owner_bind = (f"mail={owner},{OU}", inst.passwords[owner])
    for bind in ("anon", owner_bind):
        r = tool(inst, "ldapadd", ldif, bind=bind)
        assert r.returncode == 50, r.stderr  # insufficientAccessRights
        assert "administrator" in r.stderr
        r = tool(inst, "ldapmodify", f"dn: mail={owner},{OU}\nchangetype: modify\nreplace: cn\ncn: Hacked\n",
                 bind=bind)
        assert r.returncode == 50, r.stderr
        r = tool(inst, "ldapdelete", "", f"mail={owner},{OU}", bind=bind)
        assert r.returncode == 50, r.stderr
        r = tool(inst, "ldapmodrdn", "", "-r", f"mail={owner},{OU}", "mail=x@a.example", bind=bind)
        assert r.returncode == 50, r.stderr
    out = search(inst, f"(mail={owner})", "cn")
    assert "Hacked" not in out and owner in out
    assert "intruder" not in search(inst, "(mail=intruder@a.example)", "mail")


def test_ldap3_admin_writes(inst):
    import ldap3

    tls = ldap3.Tls(ca_certs_file=str(inst.ca_file), validate=2)  # ssl.CERT_REQUIRED
    server = ldap3.Server("127.0.0.1", port=inst.ports["ldap"], get_info=ldap3.NONE, tls=tls)
    conn = ldap3.Connection(server, inst.admin_dn, inst.admin_password, auto_bind=ldap3.AUTO_BIND_TLS_BEFORE_BIND)
    dn = f"mail=urgences@a.example,{OU}"
    assert conn.add(dn, ["top", "mssMailbox"], {"mail": "urgences@a.example", "mailboxType": "ORG",
                                                  "cn": "Urgences", "ou": "Service des urgences",
                                                  "o": "CHU Test", "finessId": "010000024"}), conn.result
    assert not conn.add(dn, ["top", "mssMailbox"], {"mail": "urgences@a.example", "mailboxType": "ORG"})
    assert conn.result["result"] == 68
    assert conn.modify(dn, {"ou": [(ldap3.MODIFY_REPLACE, ["Urgences adultes"])],
                            "acceptsDematerialised": [(ldap3.MODIFY_REPLACE, ["FALSE"])]}), conn.result
    conn.search(BASE, "(finessId=010000024)", attributes=["mail", "ou", "acceptsDematerialised", "o"])
    assert len(conn.entries) == 1
    e = conn.entries[0]
    assert str(e.ou) == "Urgences adultes" and str(e.acceptsDematerialised) == "FALSE" and str(e.o) == "CHU Test"
    assert conn.modify_dn(dn, "mail=urgences-adultes@a.example"), conn.result
    assert conn.delete(f"mail=urgences-adultes@a.example,{OU}"), conn.result
    conn.search(BASE, "(finessId=010000024)", attributes=["mail"])
    assert conn.entries == []
    conn.unbind()

    anon = ldap3.Connection(ldap3.Server("127.0.0.1", port=inst.ports["ldap"], get_info=ldap3.NONE), auto_bind=True)
    assert not anon.add(f"mail=anon@a.example,{OU}", ["mssMailbox"], {"mail": "anon@a.example", "mailboxType": "ORG"})
    assert anon.result["result"] == 50
    anon.unbind()


def test_search_time_limit(tmp_path, pg_available):
    """A search blocked behind a table lock ends with timeLimitExceeded (3) after the client's timeLimit."""
    if not pg_available:
        pytest.skip("PostgreSQL not reachable")
    import time

    import psycopg

    from tests.conftest import PG_URL, _drop_schema, _pg_schema_url

    schema, url = _pg_schema_url()
    inst = MssInstance(tmp_path / "a.example", "a.example", database_url=url)
    try:
        inst.start("ldap")
        lock = psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"))
        lock.execute(f'LOCK TABLE "{schema}".dir_mailboxes IN ACCESS EXCLUSIVE MODE')
        try:
            t0 = time.monotonic()
            r = subprocess.run(["ldapsearch", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-l", "1",
                                "-b", BASE, "(sn=martin)", "mail"], capture_output=True, text=True, timeout=30)
            took = time.monotonic() - t0
        finally:
            lock.rollback()
            lock.close()
        assert r.returncode == 3, r.stderr  # timeLimitExceeded
        assert took < 10
        # Once the lock is gone, the same search answers.
        r = subprocess.run(["ldapsearch", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-l", "1", "-LLL",
                            "-b", BASE, "(sn=martin)", "mail"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "jean.martin@a.example" in r.stdout, r.stderr
    finally:
        inst.stop()
        threading.Thread(target=_drop_schema, args=(schema,), daemon=True).start()
