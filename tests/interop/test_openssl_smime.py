"""S/MIME interoperability with the real `openssl cms`, both ways."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from crypto import analyse, smime
from crypto import report as rep
from crypto.keystore import KeyStore
from tests.unit.crypto.conftest import keystore  # noqa: F401  (fixture)
from tests.unit.crypto.helpers import SIMPLE, message_with_attachments

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")]


def openssl(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True, timeout=60)


def clear_key(ks: KeyStore, address: str, usage: str, tmp: Path) -> Path:
    """The private key decrypted with the master secret, as openssl needs it."""
    out = tmp / f"{address}-{usage}.key"
    result = openssl("pkey", "-in", ks.dir / "users" / address / f"{usage}.key",
                     "-passin", f"file:{ks.dir / 'master.key'}", "-out", out)
    assert result.returncode == 0, result.stderr
    return out


def trust_of(ks: KeyStore) -> smime.Trust:
    return smime.Trust(ks.anchors(), ks.crls())


@pytest.mark.parametrize("detached", [True, False])
def test_openssl_verifies_what_we_sign(keystore: KeyStore, tmp_path: Path, detached: bool) -> None:  # noqa: F811
    signed = smime.sign_message(message_with_attachments(), keystore.get("alice@a.example", "signature"),
                                detached=detached)
    (tmp_path / "m.eml").write_bytes(signed)
    result = openssl("cms", "-verify", "-in", tmp_path / "m.eml", "-CAfile", keystore.dir / "ca.pem",
                     "-purpose", "smimesign")
    assert result.returncode == 0, result.stderr
    assert b"Verification successful" in result.stderr
    assert b"resultats.pdf" in result.stdout
    tampered = signed.replace(b"ci-joint", b"ci-JOINT") if detached else signed[:-200] + signed[-199:]
    (tmp_path / "t.eml").write_bytes(tampered)
    assert openssl("cms", "-verify", "-in", tmp_path / "t.eml", "-CAfile",
                   keystore.dir / "ca.pem").returncode != 0


def test_openssl_verifies_attachment_p7s_alone(keystore: KeyStore, tmp_path: Path) -> None:  # noqa: F811
    doc = b"%PDF-1.4 compte rendu " * 100
    der = smime.sign_bytes(doc, keystore.get("alice@a.example", "signature"))
    (tmp_path / "doc.pdf").write_bytes(doc)
    (tmp_path / "doc.pdf.p7s").write_bytes(der)
    result = openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "doc.pdf.p7s",
                     "-content", tmp_path / "doc.pdf", "-CAfile", keystore.dir / "ca.pem", "-out", "/dev/null")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", ["detached", "opaque"])
def test_we_verify_what_openssl_signs(keystore: KeyStore, tmp_path: Path, mode: str) -> None:  # noqa: F811
    key = clear_key(keystore, "bob@a.example", "signature", tmp_path)
    cert = keystore.dir / "users" / "bob@a.example" / "signature.pem"
    (tmp_path / "in.txt").write_bytes(b"Content-Type: text/plain\n\nResultat: normal\nFin\n")
    args = ["cms", "-sign", "-in", tmp_path / "in.txt", "-signer", cert, "-inkey", key, "-md", "sha256"]
    if mode == "opaque":
        args.append("-nodetach")
    result = openssl(*args)
    assert result.returncode == 0, result.stderr
    message = b"From: bob@a.example\r\nTo: alice@a.example\r\nSubject: x\r\n" + result.stdout
    report, clear = analyse.analyse_message(message, trust_of(keystore))
    assert report.verdict == rep.VALID, report
    assert report.signers[0].rpps == "10005678905"
    assert b"Resultat: normal" in clear
    if mode == "detached":
        bad, _ = analyse.analyse_message(message.replace(b"normal", b"anormal"), trust_of(keystore))
        assert bad.verdict == rep.TAMPERED


def test_openssl_decrypts_what_we_encrypt(keystore: KeyStore, tmp_path: Path) -> None:  # noqa: F811
    bob = keystore.get("bob@a.example", "encryption")
    alice = keystore.get("alice@a.example", "encryption")
    (tmp_path / "e.eml").write_bytes(smime.encrypt_message(SIMPLE, [alice.certificate, bob.certificate]))
    key = clear_key(keystore, "bob@a.example", "encryption", tmp_path)
    result = openssl("cms", "-decrypt", "-in", tmp_path / "e.eml", "-inkey", key,
                     "-recip", keystore.dir / "users" / "bob@a.example" / "encryption.pem")
    assert result.returncode == 0, result.stderr
    assert b"le patient va bien." in result.stdout
    info = openssl("cms", "-cmsout", "-print", "-in", tmp_path / "e.eml")
    assert b"aes-256-cbc" in info.stdout


@pytest.mark.parametrize("oaep", [False, True])
def test_we_decrypt_what_openssl_encrypts(keystore: KeyStore, tmp_path: Path, oaep: bool) -> None:  # noqa: F811
    (tmp_path / "in.txt").write_bytes(b"Content-Type: text/plain\r\n\r\nsecret medical\r\n")
    args = ["cms", "-encrypt", "-aes256", "-in", tmp_path / "in.txt", "-recip",
            keystore.dir / "users" / "bob@a.example" / "encryption.pem"]
    if oaep:
        args += ["-keyopt", "rsa_padding_mode:oaep"]
    result = openssl(*args)
    assert result.returncode == 0, result.stderr
    message = b"From: alice@a.example\r\nTo: bob@a.example\r\n" + result.stdout
    bob = keystore.get("bob@a.example", "encryption")
    clear = smime.decrypt_message(message, [bob])
    assert b"secret medical" in clear
    # The same bytes with the ciphertext altered: a clear error, never garbage as content.
    _, body = message.split(b"\r\n\r\n", 1) if b"\r\n\r\n" in message else message.split(b"\n\n", 1)
    der = base64.b64decode(body)
    broken = der[:-20] + bytes([der[-20] ^ 1]) + der[-19:]
    with pytest.raises(smime.SmimeError):
        smime.decrypt_bytes(broken, [bob])


def test_openssl_decrypts_our_oaep_and_big_content(keystore: KeyStore, tmp_path: Path) -> None:  # noqa: F811
    bob = keystore.get("bob@a.example", "encryption")
    payload = bytes(range(256)) * 8000 + b"end"
    (tmp_path / "e.der").write_bytes(smime.encrypt_bytes(payload, [bob.certificate], oaep=True))
    key = clear_key(keystore, "bob@a.example", "encryption", tmp_path)
    result = openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", tmp_path / "e.der",
                     "-inkey", key, "-out", tmp_path / "out.bin")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.bin").read_bytes() == payload
    info = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "e.der")
    assert b"rsaesOaep" in info.stdout


def test_we_decrypt_openssl_streamed_big_content(keystore: KeyStore, tmp_path: Path) -> None:  # noqa: F811
    payload = b"Content-Type: text/plain\r\n\r\n" + b"ligne de compte rendu\r\n" * 50_000
    (tmp_path / "in.txt").write_bytes(payload)
    result = openssl("cms", "-encrypt", "-binary", "-stream", "-aes256", "-in", tmp_path / "in.txt",
                     "-recip", keystore.dir / "users" / "bob@a.example" / "encryption.pem")
    assert result.returncode == 0, result.stderr
    message = b"From: alice@a.example\r\nTo: bob@a.example\r\n" + result.stdout.replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n")
    bob = keystore.get("bob@a.example", "encryption")
    clear = smime.decrypt_message(message, [bob])
    assert clear.endswith(payload.split(b"\r\n\r\n", 1)[1])
