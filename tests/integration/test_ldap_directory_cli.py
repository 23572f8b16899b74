"""`mss directory` CLI: identifier validation, add, search, show, on a real instance database."""

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

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
    assert sorted(e["mail"][0] for e in json.loads(r.stdout)) == ["jean.martin@a.example", "paul.petit@a.example"]
    r = inst.mss("directory", "search", "(sn=pet*", check=False)
    assert r.returncode == 1 and "unterminated filter" in r.stderr
    r = inst.mss("directory", "show", "paul.petit@a.example", "--json")
    shown = json.loads(r.stdout)
    assert shown["rppsId"] == ["10000000207"] and shown["mail"] == ["paul.petit@a.example"]
    assert "userCertificate;binary" not in shown  # Paul has no certificate; Jean's is published:
    jean = json.loads(inst.mss("directory", "show", "jean.martin@a.example", "--json").stdout)
    [der] = [base64.b64decode(v) for v in jean["userCertificate;binary"]]
    pem = inst.mss("cert", "export", "jean.martin@a.example", "--usage", "encryption").stdout
    assert der == x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
