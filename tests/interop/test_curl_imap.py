"""curl, a real IMAP client (libcurl's own IMAP code), against our IMAP and IMAPS: the
README tour's commands."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess

import pytest

from tests.support.instance import MssInstance

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("curl") is None:
        pytest.fail("curl is needed (Debian package curl)")
    inst = MssInstance(tmp_path_factory.mktemp("curl") / "a", "a.example")
    inst.start("submission", "imap")
    sender = inst.address("jean.martin")
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, inst.passwords[sender])
        smtp.sendmail(sender, [inst.address("claire.durand")],
                      f"From: {sender}\r\nTo: {inst.address('claire.durand')}\r\n"
                      "Subject: Lu avec curl\r\n\r\nCompte rendu.\r\n")
    yield inst
    assert inst.stop() == 0


def curl(inst: MssInstance, url: str, *extra: str, user: str = "claire.durand") -> subprocess.CompletedProcess:
    address = inst.address(user)
    return subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", str(inst.ca_file),
                           "-u", f"{address}:{inst.passwords[address]}", *extra, url],
                          capture_output=True, text=True, timeout=60)


def test_curl_lists_searches_and_reads_over_starttls(server: MssInstance) -> None:
    base = f"imap://127.0.0.1:{server.ports['imap']}"
    listing = curl(server, base + "/")
    assert listing.returncode == 0, listing.stderr
    assert '"/" INBOX' in listing.stdout and "Shared/laboratoire@a.example/INBOX" in listing.stdout
    found = curl(server, base + "/INBOX?SUBJECT%20curl")
    assert found.returncode == 0 and found.stdout.strip().startswith("* SEARCH"), found.stdout
    uid = found.stdout.split()[-1]
    message = curl(server, f"{base}/INBOX;UID={uid}")
    assert message.returncode == 0
    assert "Subject: Lu avec curl" in message.stdout and "Compte rendu." in message.stdout


def test_curl_over_imaps_and_wrong_password(server: MssInstance) -> None:
    base = f"imaps://127.0.0.1:{server.ports['imaps']}"
    result = curl(server, base + "/INBOX", "-X", "EXAMINE INBOX")
    assert result.returncode == 0 and "EXISTS" in result.stdout
    address = server.address("jean.martin")
    refused = subprocess.run(["curl", "-sS", "--cacert", str(server.ca_file), "-u", f"{address}:wrong",
                              base + "/"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 67  # CURLE_LOGIN_DENIED
