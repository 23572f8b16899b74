"""OpenPGP (PGP/MIME, RFC 3156) with python-gnupg, and interop with the gpg command line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from crypto import report as rep
from crypto.pgp import Pgp, PgpError
from mssmail import mime
from tests.unit.crypto.helpers import SIMPLE

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg not installed")]


def gpg_cli(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args], input=stdin, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pgp, Path]:
    """Our key ring (alice) and an external gpg home (zoe), each knowing the other."""
    base = tmp_path_factory.mktemp("gpg")
    ours = Pgp(base / "server")
    ours.generate("alice@a.example", "Alice Martin")
    zoe_home = base / "zoe"
    zoe_home.mkdir(mode=0o700)
    made = gpg_cli(zoe_home, "--quick-gen-key", "Zoe <zoe@b.example>", "ed25519", "sign", "1y")
    assert made.returncode == 0, made.stderr
    fpr = gpg_cli(zoe_home, "--list-keys", "--with-colons").stdout.split(b"fpr:::::::::")[1].split(b":")[0]
    assert gpg_cli(zoe_home, "--quick-add-key", fpr.decode(), "cv25519", "encr", "1y").returncode == 0
    ours.import_keys(gpg_cli(zoe_home, "--armor", "--export", "zoe@b.example").stdout)
    imported = gpg_cli(zoe_home, "--import", stdin=ours.export("alice@a.example").encode())
    assert imported.returncode == 0, imported.stderr
    return ours, zoe_home


def test_gpg_verifies_our_pgpmime_signature(peers: tuple[Pgp, Path], tmp_path: Path) -> None:
    ours, zoe = peers
    signed = ours.sign_message(SIMPLE, "alice@a.example")
    assert b'protocol="application/pgp-signature"' in signed and b"micalg=pgp-sha256" in signed
    header_block, body = mime.split_entity(signed)
    content, sig = mime.multipart_parts(body, mime.parse_headers(header_block).boundary())
    (tmp_path / "content").write_bytes(content)
    (tmp_path / "sig.asc").write_bytes(mime.split_entity(sig)[1])
    result = gpg_cli(zoe, "--verify", str(tmp_path / "sig.asc"), str(tmp_path / "content"))
    assert result.returncode == 0 and b"Good signature" in result.stderr, result.stderr
    report = ours.verify_message(signed)
    assert report.verdict == rep.VALID and "alice@a.example" in report.signers[0].subject


def test_we_verify_gpg_signature_and_detect_tampering(peers: tuple[Pgp, Path]) -> None:
    ours, zoe = peers
    entity = b"Content-Type: text/plain\r\n\r\nResultats de Zoe\r\n"
    sig = gpg_cli(zoe, "--armor", "--detach-sign", "--digest-algo", "SHA256", "-u", "zoe@b.example", stdin=entity)
    assert sig.returncode == 0, sig.stderr
    message = (b"From: zoe@b.example\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; '
               b'boundary="XX"\r\n\r\n--XX\r\n' + entity + b"\r\n--XX\r\n"
               b"Content-Type: application/pgp-signature\r\n\r\n" + sig.stdout + b"\r\n--XX--\r\n")
    assert ours.verify_message(message).verdict == rep.VALID
    assert ours.verify_message(message.replace(b"de Zoe", b"de Zo3")).verdict == rep.TAMPERED


def test_encrypt_both_ways(peers: tuple[Pgp, Path], tmp_path: Path) -> None:
    ours, zoe = peers
    encrypted = ours.encrypt_message(SIMPLE, ["zoe@b.example"])
    assert b"multipart/encrypted" in encrypted and b"le patient" not in encrypted
    header_block, body = mime.split_entity(encrypted)
    _, part = mime.multipart_parts(body, mime.parse_headers(header_block).boundary())
    result = gpg_cli(zoe, "--decrypt", stdin=mime.split_entity(part)[1])
    assert result.returncode == 0 and b"le patient va bien" in result.stdout, result.stderr
    armored = gpg_cli(zoe, "--armor", "--encrypt", "--trust-model", "always", "-r", "alice@a.example",
                      stdin=b"Content-Type: text/plain\r\n\r\nsecret pour Alice\r\n").stdout
    message = (b"From: zoe@b.example\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="YY"\r\n\r\n'
               b"--YY\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
               b"--YY\r\nContent-Type: application/octet-stream\r\n\r\n" + armored + b"\r\n--YY--\r\n")
    assert b"secret pour Alice" in ours.decrypt_message(message)


@pytest.mark.parametrize("armour", [b"-----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA garbage\r\n-----END PGP SIGNATURE-----\r\n",
                                    b"", b"\x00\xff" * 40])
def test_garbage_armour_is_a_verdict(peers: tuple[Pgp, Path], armour: bytes) -> None:
    ours, _ = peers
    signer = ours.verify_detached(b"content", armour, ["x"])
    assert signer.status == rep.INVALID
    with pytest.raises(PgpError):
        ours.decrypt_message(b'Content-Type: multipart/encrypted; boundary="Z"\r\n\r\n--Z\r\n\r\nVersion: 1\r\n'
                             b"--Z\r\n\r\n" + armour + b"\r\n--Z--\r\n")


def test_analyse_pgp_encrypted_and_signed(peers: tuple[Pgp, Path]) -> None:
    from crypto import analyse, smime

    ours, _ = peers
    # Alice signs, then encrypts to herself (the server holds her secret key).
    signed = ours.sign_message(SIMPLE, "alice@a.example")
    encrypted = ours.encrypt_message(signed, ["alice@a.example"])
    report, clear = analyse.analyse_message(encrypted, smime.Trust([], []), [], ours)
    assert report.encrypted and report.decrypted and report.verdict == rep.VALID
    assert b"le patient va bien" in clear
    assert "OpenPGP" in rep.render_fr(report)


def test_pgp_attachment_signatures_checked_with_gpg(peers: tuple[Pgp, Path], tmp_path: Path) -> None:
    import base64

    from crypto import analyse, attachments, smime
    from tests.unit.crypto.helpers import message_with_attachments

    ours, zoe = peers
    header_block, body = mime.split_entity(message_with_attachments())
    outer, content = mime.split_content_headers(header_block)
    entity = attachments.protect_pgp(content + b"\r\n" + body, ours, "alice@a.example")
    assert b'filename="resultats.pdf.asc"' in entity
    # gpg checks one document alone against its .asc.
    doc = b"%PDF-1.4 resultats " * 50
    sig_b64 = entity.split(b'filename="resultats.pdf.asc"\r\n\r\n')[1].split(b"\r\n--")[0]
    (tmp_path / "r.pdf").write_bytes(doc)
    (tmp_path / "r.pdf.asc").write_bytes(base64.b64decode(sig_b64))
    assert gpg_cli(zoe, "--verify", str(tmp_path / "r.pdf.asc"), str(tmp_path / "r.pdf")).returncode == 0
    message = ours.sign_message(outer + b"MIME-Version: 1.0\r\n" + entity, "alice@a.example")
    report, _ = analyse.analyse_message(message, smime.Trust([], []), [], ours)
    assert report.verdict == rep.VALID
    assert {p.name: p.status for p in report.parts} == {
        "corps du message": "intact", "resultats.pdf": "intact", "compte-rendu.txt": "intact"}
