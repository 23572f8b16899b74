"""Our LDAP listener (`mss serve --only ldap`) queried by OpenLDAP's ldapsearch and by ldap3."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.instance import MssInstance

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("ldapsearch") is None, reason="ldap-utils not installed")]

BASE = "o=mss,c=fr"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def inst(request, tmp_path_factory, pg_available):
    """The server on each engine: SQLite answers inline, PostgreSQL on the reader's threads."""
    from directory import store as dstore
    from mssmail.config import load_config
    from mssmail.store.service import Store
    from tests.conftest import _drop_schema, _pg_schema_url

    schema = url = None
    if request.param == "postgresql":
        if not pg_available:
            pytest.skip("PostgreSQL not reachable")
        schema, url = _pg_schema_url()
    inst = MssInstance(tmp_path_factory.mktemp("ldap") / "a.example", "a.example", database_url=url)
    m = re.search(r"directory administrator: (\S+) password (\S+)", inst.init_output)
    inst.admin_dn, inst.admin_password = m.group(1), m.group(2)
    config = load_config(inst.data, inst.config_path, environ=inst.env)
    with Store.from_config(config) as store:
        sid = dstore.add_structure(store, tech_id="S1", name="Clinique Secrète", city="Lyon")
        dstore.add_mailbox(store, address="secret@a.example", bal_type="ORG", structure_id=sid,
                           display_name="Service caché", unlisted=True)
        dstore.add_mailbox(store, address="star*app@a.example", bal_type="APP", structure_id=sid,
                           display_name="Star (app)")
    inst.start("ldap")
    yield inst
    inst.stop()
    if schema:
        _drop_schema(schema)


def search(inst, flt, *attrs, base=BASE, scope="sub", extra=(), check=True):
    tls = ["-ZZ"] if "-D" in extra else []  # password binds need TLS
    args = ["ldapsearch", *tls, "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-LLL",
            "-o", "ldif-wrap=no", "-b", base, "-s", scope, *extra, flt, *attrs]
    env = {**os.environ, "LDAPTLS_CACERT": str(inst.ca_file)}
    r = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def mails(r) -> set[str]:
    return set(re.findall(r"^mail: (.+)$", r.stdout, re.M))


ALL = {"jean.martin@a.example", "claire.durand@a.example", "laboratoire@a.example", "dui@a.example",
       "star*app@a.example"}


@pytest.mark.parametrize(("flt", "expected"), [
    ("(mail=JEAN.MARTIN@a.example)", {"jean.martin@a.example"}),
    ("(sn=Martin)", {"jean.martin@a.example"}),
    ("(sn=mar*)", {"jean.martin@a.example"}),
    ("(sn=*and)", {"claire.durand@a.example"}),
    ("(cn=*a*e*)", {"claire.durand@a.example", "laboratoire@a.example"}),
    ("(givenName=*)", {"jean.martin@a.example", "claire.durand@a.example"}),
    ("(!(givenName=*))", {"laboratoire@a.example", "dui@a.example", "star*app@a.example"}),
    ("(&(mailboxType=PER)(specialtyCode=*))", {"jean.martin@a.example", "claire.durand@a.example"}),
    ("(|(fooBar=*)(!(fooBar=1)))", set()),  # unknown attribute: Undefined, and NOT Undefined too
    ("(&(mailboxType=PER)(professionCode=10))", {"jean.martin@a.example", "claire.durand@a.example"}),
    ("(|(mailboxType=ORG)(mailboxType=APP))", {"laboratoire@a.example", "dui@a.example", "star*app@a.example"}),
    ("(rppsId=10003456786)", {"jean.martin@a.example"}),
    ("(sn>=E)", {"jean.martin@a.example"}),
    ("(sn<=E)", {"claire.durand@a.example"}),
    ("(sn~=dur)", {"claire.durand@a.example"}),
    ("(preferredRank>=1)", ALL),
    ("(objectClass=*)", ALL),
    ("(objectClass=inetOrgPerson)", ALL),
    ("(cn=star \\28app\\29)", {"star*app@a.example"}),
    ("(cn:caseExactMatch:=Jean Martin)", set()),
    ("(l=lyon)", {"star*app@a.example"}),
])
def test_every_filter_kind(inst, flt, expected):
    assert mails(search(inst, flt, "mail")) == expected


def test_anonymous_never_sees_unlisted_admin_does(inst):
    assert "secret@a.example" not in mails(search(inst, "(mail=secret@a.example)", "mail"))
    r = search(inst, "(mail=secret@a.example)", "mail", "unlisted",
               extra=["-D", inst.admin_dn, "-w", inst.admin_password])
    assert mails(r) == {"secret@a.example"}
    assert "unlisted: TRUE" in r.stdout


def test_password_bind_refused_without_tls(inst):
    r = subprocess.run(["ldapsearch", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-D", inst.admin_dn,
                        "-w", inst.admin_password, "-b", BASE, "(mail=*)"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 13, r.stderr  # confidentialityRequired


def test_bind_failures_and_owner_bind(inst):
    r = search(inst, "(mail=*)", extra=["-D", inst.admin_dn, "-w", "wrong"], check=False)
    assert r.returncode == 49  # invalidCredentials
    owner = "jean.martin@a.example"
    r = search(inst, "(mail=jean.martin@a.example)", "mail",
               extra=["-D", f"mail={owner},ou=mailboxes,{BASE}", "-w", inst.passwords[owner]])
    assert mails(r) == {owner}


def test_size_limit_and_attribute_selection(inst):
    r = search(inst, "(objectClass=*)", "mail", extra=["-z", "2"], check=False)
    assert r.returncode == 4  # sizeLimitExceeded
    assert len(mails(r)) == 2
    r = search(inst, "(mail=jean.martin@a.example)", "sn")
    assert "sn: Martin" in r.stdout and "mail:" not in r.stdout and "givenName" not in r.stdout
    r = search(inst, "(mail=jean.martin@a.example)", "1.1")
    assert r.stdout.strip() == f"dn: mail=jean.martin@a.example,ou=mailboxes,{BASE}"


def test_scopes_and_root_dse(inst):
    dn = f"mail=claire.durand@a.example,ou=mailboxes,{BASE}"
    assert mails(search(inst, "(objectClass=*)", "mail", base=dn, scope="base")) == {"claire.durand@a.example"}
    assert mails(search(inst, "(sn=martin)", "mail", base=dn, scope="base")) == set()
    r = search(inst, "(objectClass=*)", base=BASE, scope="one")
    assert r.stdout.strip().startswith(f"dn: ou=mailboxes,{BASE}") and "mail:" not in r.stdout
    assert mails(search(inst, "(objectClass=*)", "mail", base=f"ou=mailboxes,{BASE}", scope="one")) == ALL
    r = search(inst, "(mail=*)", base=f"ou=nothing,{BASE}", check=False)
    assert r.returncode == 32  # noSuchObject
    r = search(inst, "(objectClass=*)", "namingContexts", "subschemaSubentry", base="", scope="base")
    assert f"namingContexts: {BASE}" in r.stdout and "subschemaSubentry: cn=subschema" in r.stdout


def test_subschema_is_readable(inst):
    r = search(inst, "(objectClass=subschema)", "attributeTypes", "objectClasses", base="cn=subschema",
               scope="base")
    assert "NAME 'rppsId'" in r.stdout and "NAME 'mssMailbox'" in r.stdout


def test_ldap3_client(inst):
    import ldap3

    server = ldap3.Server("127.0.0.1", port=inst.ports["ldap"], get_info=ldap3.NONE)
    conn = ldap3.Connection(server, auto_bind=True)
    assert conn.search(BASE, "(&(sn=d*)(mailboxType=PER))", attributes=["mail", "rppsId"])
    assert [str(e.mail) for e in conn.entries] == ["claire.durand@a.example"]
    assert str(conn.entries[0].rppsId) == "10005678908"
    conn.unbind()


def test_paged_results_ldapsearch(inst):
    # RFC 2696 through ldapsearch: pages of 2 give all entries, each once.
    r = subprocess.run(["ldapsearch", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-b", BASE,
                        "-E", "pr=2/noprompt", "(objectClass=*)", "mail"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    found = re.findall(r"^mail: (.+)$", r.stdout, re.M)
    assert sorted(found) == sorted(ALL)
    assert len(re.findall(r"^pagedresults: cookie=", r.stdout, re.M)) == 3  # pages of 2, 2, 1


def test_paged_results_ldap3(inst):
    import ldap3

    conn = ldap3.Connection(ldap3.Server("127.0.0.1", port=inst.ports["ldap"], get_info=ldap3.NONE),
                            auto_bind=True)
    pages, cookie, got = 0, None, []
    while True:
        conn.search(BASE, "(mailboxType=*)", attributes=["mail"], paged_size=1, paged_cookie=cookie)
        pages += 1
        got += [str(e.mail) for e in conn.entries]
        cookie = conn.result["controls"]["1.2.840.113556.1.4.319"]["value"]["cookie"]
        if not cookie:
            break
    assert sorted(got) == sorted(ALL) and pages == len(ALL)


def test_starttls_with_verified_certificate(inst):
    env = {**os.environ, "LDAPTLS_CACERT": str(inst.ca_file)}
    r = subprocess.run(["ldapsearch", "-ZZ", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-LLL",
                        "-D", inst.admin_dn, "-w", inst.admin_password, "-b", BASE,
                        "(mail=secret@a.example)", "mail"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "mail: secret@a.example" in r.stdout
    # Without the CA the client must refuse the server (the TLS is real, not a stub).
    env = {**os.environ, "LDAPTLS_CACERT": "/dev/null", "LDAPTLS_REQCERT": "demand"}
    r = subprocess.run(["ldapsearch", "-ZZ", "-H", f"ldap://127.0.0.1:{inst.ports['ldap']}", "-x", "-b", BASE,
                        "(mail=*)"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode != 0


def _certs(r, attr: str) -> list[bytes]:
    return [base64.b64decode(v) for v in re.findall(rf"^{attr};binary:: (\S+)$", r.stdout, re.M)]


def test_certificates_published_in_binary(inst):
    # RFC 4523 / 4522: DER values, transferred as ;binary whether asked with the option or not;
    # encryption certificates in userCertificate, signature ones in userSMIMECertificate.
    claire = "claire.durand@a.example"
    expected = {usage: x509.load_pem_x509_certificate(inst.mss("cert", "export", claire, "--usage", usage)
                                                      .stdout.encode()).public_bytes(Encoding.DER)
                for usage in ("encryption", "signature")}
    for asked in (("userCertificate", "userSMIMECertificate"), ("userCertificate;binary", "usersmimecertificate")):
        r = search(inst, f"(mail={claire})", *asked)
        assert _certs(r, "userCertificate") == [expected["encryption"]]
        assert _certs(r, "userSMIMECertificate") == [expected["signature"]]
    # A certificate is read by whoever encrypts: anonymous, with the entry's other attributes.
    everything = search(inst, "(mailboxType=PER)")
    assert len(_certs(everything, "userCertificate")) == 2 and "mail: jean.martin@a.example" in everything.stdout
    assert "Certificate" not in search(inst, f"(mail={claire})", "mail", "rppsId").stdout
    by_dn = search(inst, "(objectClass=*)", "userCertificate", base=f"mail={claire},ou=mailboxes,{BASE}",
                   scope="base")
    assert _certs(by_dn, "userCertificate") == [expected["encryption"]]

    import ldap3

    conn = ldap3.Connection(ldap3.Server("127.0.0.1", port=inst.ports["ldap"], get_info=ldap3.NONE),
                            auto_bind=True)
    assert conn.search(BASE, f"(mail={claire})", attributes=["userCertificate;binary"])
    [der] = conn.entries[0].entry_raw_attributes["userCertificate;binary"]
    cert = x509.load_der_x509_certificate(der)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert "10005678908" in cert.subject.rfc4514_string()
    conn.unbind()
