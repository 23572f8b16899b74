"""`mss directory` CLI: identifier validation, add, search, show, on a real instance database."""

import json

import pytest

pytestmark = pytest.mark.timeout(120)


def test_directory_cli(instance_factory):
    inst = instance_factory()
    r = inst.mss("directory", "add-person", "--rpps", "10000000208", "--family-name", "Petit", check=False)
    assert r.returncode == 1 and "check digit" in r.stderr
    inst.mss("directory", "add-person", "--rpps", "10000000207", "--family-name", "Petit",
             "--given-name", "Paul", "--mail", "paul.petit@a.example")
    r = inst.mss("directory", "add-person", "--rpps", "10000000207", "--family-name", "Petit", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = inst.mss("directory", "search", "(|(sn=pet*)(rppsId=10003456786))", "--json")
    assert sorted(e["address"] for e in json.loads(r.stdout)) == ["jean.martin@a.example", "paul.petit@a.example"]
    r = inst.mss("directory", "search", "(sn=pet*", check=False)
    assert r.returncode == 1 and "unterminated filter" in r.stderr
    r = inst.mss("directory", "show", "paul.petit@a.example", "--json")
    assert json.loads(r.stdout)["rpps"] == "10000000207"
