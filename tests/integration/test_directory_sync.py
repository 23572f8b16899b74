"""`mss directory sync` from a real OpenLDAP slapd (back-mdb) started on a loopback port in a
temporary directory, loaded with 1,000 entries; a second sync after upstream changes applies
exactly those changes; incremental on modifyTimestamp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from directory.identifiers import luhn_digit
from tests.support.instance import MssInstance, free_port
from tests.support.slapd import SLAPADD, SLAPD, Slapd

pytestmark = pytest.mark.timeout(300)

SUFFIX = "o=upstream,c=fr"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "upstream-secret"
PEOPLE = f"ou=people,{SUFFIX}"
N = 1000


def rpps(i: int) -> str:
    body = f"1{i:09d}"
    return body + luhn_digit(body)


def finess(i: int) -> str:
    body = f"75{i:06d}"
    return body + luhn_digit(body)


def entry(i: int, ts: str | None = None) -> str:
    """Entry i: 70% personal mailboxes of a professional, 30% organisational ones of a structure."""
    mail = f"user{i:04d}@upstream.example"
    lines = [f"dn: mail={mail},{PEOPLE}", "objectClass: inetOrgPerson", "objectClass: mssMailbox", f"mail: {mail}"]
    if i % 10 < 7:
        lines += [f"cn: Prenom{i} Nom{i}", f"sn: Nom{i}", f"givenName: Prenom{i}", "mailboxType: PER",
                  f"rppsId: {rpps(i)}", "professionCode: 10", "professionLabel: Médecin"]
    else:
        lines += [f"cn: Service {i}", f"sn: Service {i}", "mailboxType: ORG", f"ou: Service {i}",
                  f"o: Hôpital {i % 50}", f"finessId: {finess(i % 50)}", "l: Paris"]
    lines.append("telephoneNumber: +33 1 00 00 00 00")  # an attribute we do not model
    if ts:
        lines.append(f"modifyTimestamp: {ts}")
    return "\n".join(lines) + "\n"


def as_add(text: str) -> str:
    dn, rest = text.split("\n", 1)
    return f"{dn}\nchangetype: add\n{rest}"


class UpstreamSlapd(Slapd):
    """The upstream directory: our schema, the upstream suffix, writable by its root DN."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, SUFFIX, indexes=["objectClass eq", "mail eq"], root_pw=ROOT_PW,
                         extra="sizelimit unlimited\n")

    def load(self, ldif: str) -> None:
        path = self.root / "load.ldif"
        path.write_text(ldif)
        r = subprocess.run([SLAPADD, "-f", str(self.conf), "-l", str(path)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr

    def modify(self, ldif: str) -> None:
        r = subprocess.run(["ldapmodify", "-H", self.url, "-x", "-D", ROOT_DN, "-w", ROOT_PW], input=ldif,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr + r.stdout


@pytest.fixture
def slapd(tmp_path):
    if SLAPD is None or SLAPADD is None or shutil.which("ldapmodify") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("slapd (Debian package slapd) and ldap-utils are required in CI")
        pytest.skip("slapd not installed")
    s = UpstreamSlapd(tmp_path / "slapd")
    base = (f"dn: {SUFFIX}\nobjectClass: organization\no: upstream\n\n"
            f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n")
    # Distinct, past modifyTimestamps (one per second): the high-water mark is then the last entry's.
    start = time.time() - 86400
    s.load(base + "\n".join(entry(i, time.strftime("%Y%m%d%H%M%SZ", time.gmtime(start + i))) for i in range(N)))
    s.start()
    yield s
    s.stop()


def run_sync(inst: MssInstance, slapd: Slapd, *extra: str) -> dict:
    r = inst.mss("directory", "sync", "--url", slapd.url, "--base", SUFFIX, "--bind-dn", ROOT_DN,
                 "--password-stdin", "--json", *extra, input=ROOT_PW + "\n")
    return json.loads(r.stdout)


def single(entry: dict) -> dict:
    """An entry of `mss directory search --json` (LDAP names, lists of values), one value each."""
    assert all(len(v) == 1 for k, v in entry.items() if k not in ("dn", "objectClass")), entry
    return {k: v if k in ("dn", "objectClass") else v[0] for k, v in entry.items()}


def search(inst: MssInstance, flt: str) -> list[dict]:
    found = json.loads(inst.mss("directory", "search", flt, "--json", "--limit", "5000", "--unlisted").stdout)
    return [single(e) for e in found]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, pg_available):
    """The instance's database: SQLite (None: the default) or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    if not pg_available:
        pytest.skip("PostgreSQL not reachable")
    from tests.conftest import _drop_schema, _pg_schema_url

    schema, url = _pg_schema_url()
    yield url
    _drop_schema(schema)


def test_sync_from_slapd(tmp_path, slapd, database_url):
    inst = MssInstance(tmp_path / "a.example", "a.example", database_url=database_url)
    local_before = {e["mail"] for e in search(inst, "(objectClass=*)")}

    t = time.perf_counter()
    rep = run_sync(inst, slapd)
    first_seconds = time.perf_counter() - t
    assert (rep["mode"], rep["read"], rep["added"], rep["changed"], rep["removed"]) == ("full", N, N, 0, 0), rep
    assert rep["rejected_count"] == 0 and rep["high_water"]
    synced = search(inst, "(mail=*@upstream.example)")
    assert len(synced) == N
    e = search(inst, "(mail=user0003@upstream.example)")[0]
    assert (e["sn"], e["givenName"], e["rppsId"], e["mailboxType"]) == ("Nom3", "Prenom3", rpps(3), "PER")
    e = search(inst, "(mail=user0007@upstream.example)")[0]
    assert (e["mailboxType"], e["o"], e["finessId"], e["l"], e["ou"]) == (
        "ORG", "Hôpital 7", finess(7), "Paris", "Service 7")
    assert len(search(inst, "(finessId=" + finess(7) + ")")) == sum(i % 10 >= 7 and i % 50 == 7 for i in range(N))

    # Idempotent, and incremental: only the entries of the high-water mark's second come back.
    rep = run_sync(inst, slapd)
    assert rep["mode"] == "incremental" and rep["read"] <= 2, rep
    assert (rep["added"], rep["changed"], rep["removed"]) == (0, 0, 0), rep

    # Upstream changes: 3 modified, 2 deleted, 4 added (one of them invalid: rejected), 1 renamed.
    time.sleep(1.1)  # a second later than the mark
    slapd.modify(f"""dn: mail=user0010@upstream.example,{PEOPLE}
changetype: modify
replace: sn
sn: Nouveaunom
-
replace: professionLabel
professionLabel: Chirurgien

dn: mail=user0017@upstream.example,{PEOPLE}
changetype: modify
replace: l
l: Lyon

dn: mail=user0020@upstream.example,{PEOPLE}
changetype: modify
add: unlisted
unlisted: TRUE

dn: mail=user0030@upstream.example,{PEOPLE}
changetype: delete

dn: mail=user0031@upstream.example,{PEOPLE}
changetype: delete

dn: mail=user0040@upstream.example,{PEOPLE}
changetype: modrdn
newrdn: mail=renamed0040@upstream.example
deleteoldrdn: 1

""" + "\n".join(as_add(entry(i)) for i in range(N, N + 3)) + f"""
dn: mail=bad@upstream.example,{PEOPLE}
changetype: add
objectClass: inetOrgPerson
objectClass: mssMailbox
mail: bad@upstream.example
cn: Bad Rpps
sn: Rpps
mailboxType: PER
rppsId: 10000000208
""")
    rep = run_sync(inst, slapd)
    assert rep["mode"] == "incremental", rep
    # 3 added + the renamed entry's new address; 3 modified; 2 deleted + the renamed entry's old address.
    assert (rep["added"], rep["changed"], rep["removed"], rep["rejected_count"]) == (4, 3, 3, 1), rep
    assert rep["read"] <= 10, rep
    assert "bad@upstream.example" in rep["rejected"][0] and "check digit" in rep["rejected"][0]
    assert search(inst, "(mail=user0010@upstream.example)")[0]["sn"] == "Nouveaunom"
    assert search(inst, "(mail=user0010@upstream.example)")[0]["professionLabel"] == "Chirurgien"
    assert search(inst, "(mail=user0017@upstream.example)")[0]["l"] == "Lyon"
    assert search(inst, "(mail=user0020@upstream.example)")[0]["unlisted"] == "TRUE"
    assert search(inst, "(|(mail=user0030@upstream.example)(mail=user0031@upstream.example)"
                        "(mail=user0040@upstream.example))") == []
    assert len(search(inst, "(mail=renamed0040@upstream.example)")) == 1
    assert len(search(inst, f"(mail=user{N + 2:04d}@upstream.example)")) == 1
    assert len(search(inst, "(mail=*@upstream.example)")) == N + 3 - 2
    # The person of a deleted personal mailbox went with it; shared structures stay.
    assert search(inst, f"(rppsId={rpps(31)})") == []

    # A full pass finds nothing more to do; local entries not from this upstream are untouched.
    rep = run_sync(inst, slapd, "--full")
    assert (rep["mode"], rep["added"], rep["changed"], rep["removed"]) == ("full", 0, 0, 0), rep
    assert rep["read"] == N + 3 - 2 + 1  # the invalid entry is read (and rejected) again
    assert local_before <= {e["mail"] for e in search(inst, "(objectClass=*)")}
    print(f"first sync of {N} entries: {first_seconds:.2f} s")


def test_sync_errors(tmp_path, slapd):
    inst = MssInstance(tmp_path / "a.example", "a.example", demo=False)
    r = inst.mss("directory", "sync", "--url", slapd.url, "--base", SUFFIX, "--bind-dn", ROOT_DN,
                 "--password-stdin", input="wrong\n", check=False)
    assert r.returncode == 1 and "cannot bind" in r.stderr, r.stderr
    port = free_port()
    r = inst.mss("directory", "sync", "--url", f"ldap://127.0.0.1:{port}", "--base", SUFFIX, check=False)
    assert r.returncode == 1 and "cannot bind" in r.stderr, r.stderr
    # A filter restricting the upstream: only the ORG mailboxes.
    r = inst.mss("directory", "sync", "--url", slapd.url, "--base", SUFFIX, "--bind-dn", ROOT_DN,
                 "--password-stdin", "--filter", "(mailboxType=ORG)", input=ROOT_PW + "\n")
    assert f"added {N * 3 // 10}, changed 0, removed 0" in r.stdout, r.stdout


def test_sync_from_our_own_ldap_server(tmp_path):
    """Another mss instance as the upstream: anonymous, no modifyTimestamp (every pass is full),
    its unlisted entries never published so never synced."""
    up = MssInstance(tmp_path / "up.example", "up.example")
    down = MssInstance(tmp_path / "down.example", "down.example", demo=False)
    up.start("ldap")
    try:
        url = f"ldap://127.0.0.1:{up.ports['ldap']}"
        rep = json.loads(down.mss("directory", "sync", "--url", url, "--base", "o=mss,c=fr", "--json").stdout)
        listed = [single(e) for e in json.loads(up.mss("directory", "search", "(mail=*)", "--json").stdout)]
        assert rep["mode"] == "full" and rep["high_water"] is None
        assert (rep["added"], rep["changed"], rep["removed"]) == (len(listed), 0, 0), rep
        got = search(down, "(mail=*)")
        assert {e["mail"] for e in got} == {e["mail"] for e in listed}
        jean = next(e for e in got if "rppsId" in e)
        assert jean["sn"] and jean["o"]
        rep = json.loads(down.mss("directory", "sync", "--url", url, "--base", "o=mss,c=fr", "--json").stdout)
        assert (rep["mode"], rep["added"], rep["changed"], rep["removed"]) == ("full", 0, 0, 0), rep
    finally:
        up.stop()
