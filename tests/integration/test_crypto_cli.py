"""`mss cert ...` on a real data directory made by `mss init --demo`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from crypto import pki
from mssmail.demo import DEMO_MAILBOXES
from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(180)


# Jean Martin's RPPS as `mss init --demo` creates it.
DEMO_RPPS = next(owner for local, _kind, owner, _name in DEMO_MAILBOXES if local == "jean.martin")


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> MssInstance:
    return MssInstance(tmp_path_factory.mktemp("crypto-cli") / "data")


def test_demo_has_certificates_and_list_json(inst: MssInstance) -> None:
    out = inst.mss("cert", "list", "--json")
    entries = json.loads(out.stdout)
    pairs = {(e["address"], e["usage"]) for e in entries}
    assert ("jean.martin@a.example", "signature") in pairs
    assert ("claire.durand@a.example", "encryption") in pairs
    jean = next(e for e in entries if e["address"] == "jean.martin@a.example")
    assert jean["rpps"] == DEMO_RPPS and jean["has_key"] and not jean["revoked"]


def test_issue_export_revoke_crl(inst: MssInstance) -> None:
    out = inst.mss("cert", "issue", "laboratoire@a.example", "--usage", "tls", "--rpps", "750000012", "--json")
    serial = json.loads(out.stdout)["serial"]
    pem = inst.mss("cert", "export", "laboratoire@a.example", "--usage", "tls").stdout
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert format(cert.serial_number, "x") == serial
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(inst.data / "pki" / "ca.pem"), "-purpose",
                             "sslclient"], input=pem.encode(), capture_output=True)
    assert verify.returncode == 0, verify.stderr
    assert f"revoked {serial}" in inst.mss("cert", "revoke", serial).stdout
    crl = x509.load_pem_x509_crl((inst.data / "pki" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    inst.mss("cert", "crl")
    openssl = subprocess.run(["openssl", "verify", "-crl_check", "-CAfile", str(inst.data / "pki" / "ca.pem"),
                              "-CRLfile", str(inst.data / "pki" / "crl.pem")], input=pem.encode(),
                             capture_output=True)
    assert openssl.returncode != 0 and b"revoked" in openssl.stdout + openssl.stderr
    bad = inst.mss("cert", "revoke", "nobody@a.example", check=False)
    assert bad.returncode == 1 and "no certificate" in bad.stderr


def test_import_pkcs12_and_trust(inst: MssInstance, tmp_path: Path) -> None:
    ca_cert, ca_key = pki.create_ca(tmp_path / "ext", "Autorite externe")
    cert, key = pki.issue_user_certificate(ca_cert, ca_key, "ext@a.example", "signature")
    p12 = tmp_path / "ext.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"ext", key, cert, [ca_cert], serialization.BestAvailableEncryption(b"pw")))
    wrong = inst.mss("cert", "import", "ext@a.example", "--pkcs12", str(p12), "--password-stdin",
                     input="nope\n", check=False)
    assert wrong.returncode == 1 and "PKCS#12" in wrong.stderr
    ok = inst.mss("cert", "import", "ext@a.example", "--pkcs12", str(p12), "--password-stdin", input="pw\n")
    assert "imported signature certificate" in ok.stdout
    out = inst.mss("cert", "trust", str(tmp_path / "ext" / "ca.pem"))
    assert "Autorite externe" in out.stdout
    assert (inst.data / "pki" / "trust").is_dir()


def test_protect_then_report_in_french(inst: MssInstance, tmp_path: Path) -> None:
    from tests.unit.crypto.helpers import message_with_attachments

    (tmp_path / "m.eml").write_bytes(message_with_attachments().replace(
        b"From: alice@a.example", b"From: Dr Jean Martin <jean.martin@a.example>"))
    out = subprocess.run([*inst_cmd(inst), "cert", "protect", str(tmp_path / "m.eml"),
                          "--sign-as", "jean.martin@a.example", "--encrypt-to", "claire.durand@a.example"],
                         capture_output=True, env=inst.env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"smime-type=enveloped-data" in out.stdout and b"resultats" not in out.stdout
    (tmp_path / "p.eml").write_bytes(out.stdout)
    report = inst.mss("cert", "report", str(tmp_path / "p.eml"), "--as", "claire.durand@a.example").stdout
    assert "Verdict : VALIDE" in report and f"Identifiant RPPS : {DEMO_RPPS}" in report
    assert "resultats.pdf (pièce jointe) : intègre" in report
    data = json.loads(inst.mss("cert", "report", str(tmp_path / "p.eml"), "--as", "claire.durand@a.example",
                               "--json").stdout)
    assert data["verdict"] == "valid" and data["decrypted"] is True
    # Without Claire's key the server cannot open it: no false "valid".
    closed_run = inst.mss("cert", "report", str(tmp_path / "p.eml"), "--json", check=False)
    closed = json.loads(closed_run.stdout)
    assert closed["verdict"] != "valid" and closed["decrypted"] is False
    assert closed_run.returncode == 1  # not valid: a script must not take it as verified
    missing = inst.mss("cert", "protect", str(tmp_path / "m.eml"), "--encrypt-to", "nobody@a.example", check=False)
    assert missing.returncode == 1 and "nobody@a.example" in missing.stderr


def inst_cmd(inst: MssInstance) -> list[str]:
    from tests.support.instance import MSS

    return [*MSS, "--data", str(inst.data)]


def test_pgp_generate_export_import(inst: MssInstance, tmp_path: Path) -> None:
    out = inst.mss("cert", "pgp-generate", "jean.martin@a.example", "--name", "Jean Martin").stdout
    assert out.startswith("OpenPGP key ")
    armoured = inst.mss("cert", "pgp-export", "jean.martin@a.example").stdout
    assert armoured.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    home = tmp_path / "peer"
    home.mkdir(mode=0o700)
    imported = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import"], input=armoured.encode(),
                              capture_output=True)
    assert imported.returncode == 0 and b"jean.martin@a.example" in imported.stderr
    (tmp_path / "garbage.asc").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----\n")
    bad = inst.mss("cert", "pgp-import", str(tmp_path / "garbage.asc"), check=False)
    assert bad.returncode == 1 and "no OpenPGP key" in bad.stderr
    missing = inst.mss("cert", "pgp-export", "nobody@a.example", check=False)
    assert missing.returncode == 1 and "no OpenPGP key for nobody@a.example" in missing.stderr
