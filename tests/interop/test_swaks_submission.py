"""swaks (Debian) as a real client: STARTTLS + AUTH on submission, and MX delivery."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mssmail.store.service import Store
from tests.support.instance import MssInstance
from tests.support.mailbox import summaries

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")]


@pytest.fixture
def server(instance_factory) -> MssInstance:
    inst = instance_factory("a.example")
    inst.configure("trust", "domains", '["b.example"]')
    inst.start("smtp", "submission")
    return inst


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--hide-informational", *args], capture_output=True, text=True, timeout=60)


def subjects(inst: MssInstance, address: str) -> list[str]:
    with Store(f"sqlite:///{inst.data / 'mss.db'}", inst.data / "blobs", pool_size=1) as store:
        return [m.subject for m in summaries(store, address)]


def test_swaks_submission_with_starttls_and_auth(server: MssInstance):
    user = server.address("jean.martin")
    result = swaks("--server", f"127.0.0.1:{server.ports['submission']}", "--tls", "--tls-verify",
                   "--tls-ca-path", str(server.ca_file), "--auth", "PLAIN", "--auth-user", user,
                   "--auth-password", server.passwords[user], "--from", user,
                   "--to", server.address("claire.durand"), "--header", "Subject: Compte rendu swaks",
                   "--body", "Bonjour, ci-joint le compte rendu.")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout
    assert "Compte rendu swaks" in subjects(server, server.address("claire.durand"))
    login = swaks("--server", f"127.0.0.1:{server.ports['submission']}", "--tls", "--tls-verify",
                  "--tls-ca-path", str(server.ca_file), "--auth", "LOGIN", "--auth-user", user,
                  "--auth-password", "not-the-password", "--from", user, "--to", server.address("dui"))
    assert login.returncode != 0 and "535 5.7.8" in login.stdout


def test_swaks_without_tls_cannot_authenticate(server: MssInstance):
    user = server.address("jean.martin")
    result = swaks("--server", f"127.0.0.1:{server.ports['submission']}", "--auth", "PLAIN",
                   "--auth-user", user, "--auth-password", server.passwords[user], "--from", user,
                   "--to", server.address("claire.durand"))
    assert result.returncode != 0
    assert "250-AUTH" not in result.stdout
    assert "did not advertise authentication" in result.stderr


def test_swaks_mx_delivery_from_the_space_of_trust(server: MssInstance):
    result = swaks("--server", f"127.0.0.1:{server.ports['smtp']}", "--tls", "--tls-verify",
                   "--tls-ca-path", str(server.ca_file), "--from", "secretariat@b.example",
                   "--to", server.address("laboratoire"), "--header", "Subject: Demande d'analyse")
    assert result.returncode == 0, result.stdout
    assert "Demande d'analyse" in subjects(server, server.address("laboratoire"))
    refused = swaks("--server", f"127.0.0.1:{server.ports['smtp']}", "--tls", "--tls-verify",
                    "--tls-ca-path", str(server.ca_file), "--from", "x@outside.example",
                    "--to", server.address("laboratoire"))
    assert refused.returncode != 0 and "550 5.7.1" in refused.stdout
