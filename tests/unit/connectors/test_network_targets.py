"""The `fhir` and `smtp` targets through the worker, on a real store (SQLite and
PostgreSQL) against real peers on loopback: a local HTTPS FHIR server (bearer token,
or a client certificate it requires) whose every received Bundle loads in
`fhir.resources` (R4B), and aiosmtpd with STARTTLS. 2xx / 250 are done; a FHIR 4xx and
an SMTP 5xx are dead letters at once; 5xx / 4xx replies and network errors are
retried with the same bytes (the conditional creates, the same Resent-Message-ID)."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from connectors import fhir, smtp
from mssmail.store.connectors import DELIVER_KIND, MDN_KIND
from tests.unit.connectors.peers import FhirServer, Pki, SmtpPeer, make_pki, outcome
from tests.unit.connectors.test_runtime import ADMIN, BOX, SAMPLES, _mail, _worker

HPS = (SAMPLES / "hps_02_multi.hps").read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fhir_server(pki: Pki) -> Iterator[FhirServer]:
    server = FhirServer(pki)
    yield server
    server.close()


def _route(store, tmp_path: Path, target_type: str, target: str, options: dict[str, str],
           attachment: tuple[str, bytes] = ("res.hps", HPS)):
    store.create_mailbox(BOX)
    store.add_connector_rule(ADMIN, BOX, target_type, [target], options=options)
    store.deliver(_mail([attachment], message_id="<net1@b.example>"), [BOX], sender="lab@b.example")
    worker = _worker(store, tmp_path)
    assert worker.run_once()  # route
    return worker


def _later(worker, times: int) -> None:
    later = datetime.now(UTC)
    for _ in range(times):
        later += timedelta(hours=7)
        worker.run_once(now=later)


def test_fhir_bearer_token_retry_after_500_then_done(store, tmp_path: Path, pki: Pki, fhir_server) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    patients = HPS.count(b"\rP|") + HPS.count(b"\nP|")
    worker = _route(store, tmp_path, "fhir", fhir_server.url, {"token_file": str(token), "ca_file": str(pki.ca)})
    fhir_server.answers = [(500, outcome("exception", "base indisponible"))]
    _later(worker, patients + 2)
    jobs = store.list_jobs(kind=DELIVER_KIND)
    assert len(jobs) == patients >= 2 and all(j.state == "done" for j in jobs), [j.last_error for j in jobs]
    assert len(fhir_server.received) == patients + 1  # one 500, retried
    bodies = [r["body"] for r in fhir_server.received]
    first_key = next(j for j in jobs if j.attempts == 2)
    assert bodies.count(store.blobs.read(first_key.payload["input_sha256"])) == 2  # the same bytes again
    for request in fhir_server.received:
        assert request["path"] == "/fhir" and request["headers"]["Authorization"] == "Bearer s3cr3t-token"
        assert request["headers"]["Content-Type"].startswith("application/fhir+json")
        bundle = Bundle.model_validate(json.loads(request["body"]))
        assert bundle.type == "transaction"
        assert all(entry.request.method == "POST" and entry.request.ifNoneExist for entry in bundle.entry)
    assert all(j.progress["outcome"].startswith("200 OK: 201 Created") for j in jobs)
    # no secret in the job, the audit or the log line
    assert "s3cr3t" not in json.dumps([j.payload for j in jobs])


def test_fhir_4xx_is_a_dead_letter_with_its_outcome_and_code(store, tmp_path: Path, pki: Pki,
                                                            fhir_server) -> None:
    fhir_server.answers = [(422, outcome("902", "Identifiant patient inconnu"))] * 10
    worker = _route(store, tmp_path, "fhir", fhir_server.url, {"ca_file": str(pki.ca)},
                    ("res.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes()))
    assert worker.run_once()
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "dead" and "422" in job.last_error and "Identifiant patient inconnu" in job.last_error
    assert job.progress["error_code"] == 902 and job.attempts == 1


def test_fhir_mtls_client_certificate(store, tmp_path: Path, pki: Pki) -> None:
    server = FhirServer(pki, require_client_cert=True)
    try:
        worker = _route(store, tmp_path, "fhir", server.url,
                        {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)},
                        ("res.xml", (SAMPLES / "dlu_01_full.xml").read_bytes()))
        assert worker.run_once()
        (job,) = store.list_jobs(kind=DELIVER_KIND)
        assert job.state == "done", job.last_error
        (request,) = server.received
        assert dict(x[0] for x in request["client"]["subject"])["commonName"] == "client"
        bundle = Bundle.model_validate(json.loads(request["body"]))
        kinds = [e.resource.__resource_type__ for e in bundle.entry]
        assert kinds == ["Patient", "DocumentReference"]
        # without the client certificate the handshake fails: a network error, retried
        answer = None
        with pytest.raises(fhir.TemporaryError):
            answer = fhir.deliver(server.url, request["body"], {"ca_file": str(pki.ca)}, 5)
        assert answer is None
    finally:
        server.close()


def test_fhir_refuses_an_untrusted_server_and_plain_http(store, tmp_path: Path, fhir_server) -> None:
    with pytest.raises(fhir.TemporaryError, match="certificate"):
        fhir.deliver(fhir_server.url, b"{}", {}, 5)  # the system CAs do not sign the test server
    store.create_mailbox(BOX)
    with pytest.raises(ValueError, match="https"):
        store.add_connector_rule(ADMIN, BOX, "fhir", ["http://fhir.example/base"])
    with pytest.raises(ValueError, match="unknown option"):
        store.add_connector_rule(ADMIN, BOX, "fhir", ["https://fhir.example/base"], options={"token": "x"})


def test_smtp_forward_with_the_original_id_and_the_same_id_on_retry(store, tmp_path: Path, pki: Pki) -> None:
    peer = SmtpPeer(pki)
    try:
        peer.replies = ["451 4.3.0 try again later"]
        target = f"smtp://127.0.0.1:{peer.port}/integration@dui.example"
        worker = _route(store, tmp_path, "smtp", target, {"ca_file": str(pki.ca)})
        _later(worker, 2)
    finally:
        peer.close()
    (job,) = store.list_jobs(kind=DELIVER_KIND)  # one per message, whatever its parts
    assert job.state == "done" and job.attempts == 2 and job.progress["outcome"].startswith("250")
    (received,) = peer.received
    envelope_from, rcpts, data = received
    assert envelope_from == BOX and rcpts == ["integration@dui.example"]
    forwarded = email.message_from_bytes(data, policy=email.policy.default)
    assert forwarded["X-MSS-Original-Message-ID"] == "<net1@b.example>"
    assert forwarded["Message-ID"] == "<net1@b.example>"  # the original, untouched
    assert forwarded["Resent-Message-ID"] == f"<{job.key[:32]}@a.example>"
    assert data == store.blobs.read(job.payload["input_sha256"])  # the bytes rendered when routed
    attachment = next(p for p in forwarded.iter_attachments())
    assert attachment.get_content() == HPS


def test_smtp_5xx_is_dead_and_acknowledged_906(store, tmp_path: Path, pki: Pki) -> None:
    peer = SmtpPeer(pki)
    try:
        peer.replies = ["554 5.7.1 refused"]
        worker = _route(store, tmp_path, "smtp", f"smtp://127.0.0.1:{peer.port}/x@dui.example",
                        {"ca_file": str(pki.ca)})
        assert worker.run_once()
    finally:
        peer.close()
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "dead" and "554" in job.last_error
    (ack,) = store.list_jobs(kind=MDN_KIND)  # no MDN asked: a plain failure mail to the lab
    assert ack.payload["type"] == "mail" and ack.payload["code"] == 906


def test_target_parsing() -> None:
    assert smtp.parse_target("smtps://mx.example/a@b.example").port == 465
    for bad in ("smtp://mx.example/", "smtp://mx.example/a@b\r\n", "http://x/a@b"):
        with pytest.raises(ValueError):
            smtp.parse_target(bad)
    with pytest.raises(ValueError):
        fhir.validate_target("http://fhir.example/")
    fhir.validate_target("http://127.0.0.1:8080/fhir")


def test_connector_test_mode_mllp_and_fhir(store, tmp_path: Path, pki: Pki, fhir_server) -> None:
    """`mss connector test`: MSH-11 T and a TEST control id over MLLP; every FHIR resource
    labelled HTEST; the peers' answers reported, one per target."""
    from connectors import testmode
    from tests.unit.connectors.test_mllp_target import Listener

    listener = Listener()
    try:
        store.create_mailbox(BOX)
        hl7 = store.add_connector_rule(ADMIN, BOX, "mllp", [f"127.0.0.1:{listener.port}", "127.0.0.1:1"])
        data = testmode.synthetic_hprim_net(datetime.now(UTC))
        report = testmode.run(hl7, data, "test.hpr", hostname="a.example", mllp_timeout=5, network_timeout=5)
    finally:
        listener.close()
    ok, refused = report["answers"]
    assert ok["ok"] and ok["answer"].startswith(f"AA for {report['control_id']}")
    assert not refused["ok"] and "127.0.0.1:1" in refused["answer"]
    (message,) = listener.received
    msh = message.split(b"\r", 1)[0].split(b"|")
    assert msh[10] == b"T" and msh[9].decode() == report["control_id"] and report["control_id"].startswith("TEST")
    rule = store.add_connector_rule(ADMIN, BOX, "fhir", [fhir_server.url], options={"ca_file": str(pki.ca)})
    report = testmode.run(rule, (SAMPLES / "hps_01_simple.hps").read_bytes(), "r.hps", hostname="a.example",
                          mllp_timeout=5, network_timeout=5)
    assert report["answers"][0]["ok"] and report["answers"][0]["answer"].startswith("200 OK")
    bundle = Bundle.model_validate(json.loads(fhir_server.received[0]["body"]))
    assert all(any(s.code == "HTEST" for s in entry.resource.meta.security) for entry in bundle.entry)
    with pytest.raises(ValueError, match="matches no part"):
        testmode.run(store.add_connector_rule(ADMIN, BOX, "folder", [str(tmp_path)], match={"kind": "xdm"}),
                     data, "test.hpr", hostname="a.example", mllp_timeout=5, network_timeout=5)
    folder_rule = store.add_connector_rule(ADMIN, BOX, "folder", [str(tmp_path)])
    report = testmode.run(folder_rule, data, "test.hpr", hostname="a.example", mllp_timeout=5, network_timeout=5)
    (written,) = tmp_path.glob("TEST_*.hpr")
    assert written.read_bytes() == data and report["answers"][0]["answer"].endswith(written.name)
