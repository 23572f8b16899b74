"""The fhir, smtp and imap targets on a real `mss serve` (SQLite and PostgreSQL): an HPRIM
Santé file sent by SMTP submission to the DUI mailbox reaches a local HTTPS FHIR server
(one transaction Bundle per patient, each loading in fhir.resources R4B), an aiosmtpd
peer (the mail forwarded once, with X-MSS-Original-Message-ID) and a folder of our own
IMAP server (appended once with $MSSIntegrated; a second APPEND attempt finds it by
UID SEARCH HEADER and appends nothing). Then `mss connector test` delivers the
synthetic report to each in test mode and prints the peers' answers."""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import ssl
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle

from connectors import imap as imap_target
from tests.integration.test_connectors_runtime import DUI, LAB, SAMPLES, _jobs, _mail, _send, _wait
from tests.unit.connectors.peers import FhirServer, SmtpPeer, make_pki


def _imap_messages(inst, address: str) -> list[tuple[bytes, bytes]]:
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    with imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=context, timeout=30) as client:
        client.login(address, inst.passwords[address])
        client.select("INBOX", readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    out = []
    for item in data:
        if isinstance(item, tuple):
            out.append((item[0], item[1]))
    return out


def test_fhir_smtp_and_imap_targets(instance_factory, instance_db_url, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    fhir_server, smtp_peer = FhirServer(pki), SmtpPeer(pki)
    inst = instance_factory("a.example", database_url=instance_db_url)
    inst.configure("connectors", "poll_interval", '"1s"')
    target_box = next(a for a in inst.passwords if a not in (DUI, LAB))
    password = tmp_path / "imap-password"
    password.write_text(inst.passwords[target_box] + "\n")
    token = tmp_path / "fhir-token"
    token.write_text("jeton-de-test\n")
    for rule in json.loads(inst.mss("connector", "list", "--json").stdout):
        inst.mss("connector", "remove", str(rule["id"]))
    imap_url = f"imaps://127.0.0.1:{inst.ports['imaps']}/INBOX"
    inst.mss("connector", "add", DUI, "--type", "fhir", "--target", fhir_server.url, "--match", "kind=hprim_sante",
             "--option", f"token_file={token}", "--option", f"ca_file={pki.ca}")
    inst.mss("connector", "add", DUI, "--type", "smtp", "--match", "kind=hprim_sante",
             "--target", f"smtp://127.0.0.1:{smtp_peer.port}/integration@dui.example",
             "--option", f"ca_file={pki.ca}")
    inst.mss("connector", "add", DUI, "--type", "imap", "--target", imap_url, "--match", "kind=hprim_sante",
             "--option", f"ca_file={inst.ca_file}", "--option", f"user={target_box}",
             "--option", f"password_file={password}")
    rules = json.loads(inst.mss("connector", "list", "--json").stdout)
    assert [r["type"] for r in rules] == ["fhir", "smtp", "imap"]
    assert all("jeton" not in json.dumps(r) for r in rules)
    data = (SAMPLES / "hps_02_multi.hps").read_bytes()
    inst.start("submission", "imap", "connectors")
    try:
        _send(inst, _mail("resultats.hps", data, "<targets@lab.a.example>"))
        # only the first rule matches (first match wins): fhir; the smtp and imap rules
        # are exercised by `mss connector test` and by rules of their own below
        _wait(lambda: [j["state"] for j in _jobs(inst) if j["kind"] == "connector.deliver"]
              and all(j["state"] == "done" for j in _jobs(inst)), "the fhir deliveries")
        for rule in rules[:1]:
            inst.mss("connector", "remove", str(rule["id"]))
        _send(inst, _mail("resultats.hps", data, "<targets2@lab.a.example>"))
        _wait(lambda: len([j for j in _jobs(inst) if j["kind"] == "connector.deliver"]) >= 2 and all(
            j["state"] == "done" for j in _jobs(inst)), "the smtp delivery")
        inst.mss("connector", "remove", str(rules[1]["id"]))
        _send(inst, _mail("resultats.hps", data, "<targets3@lab.a.example>"))
        _wait(lambda: any(j["payload"]["type"] == "imap" and j["state"] == "done" for j in _jobs(inst)
                          if j["kind"] == "connector.deliver"), "the imap delivery")
        imap_job = next(j for j in _jobs(inst) if j["kind"] == "connector.deliver" and j["payload"]["type"] == "imap")
        assert imap_job["progress"]["outcome"].startswith("appended")
        appended = _imap_messages(inst, target_box)
        assert len(appended) == 1 and b"$MSSIntegrated" in appended[0][0]
        forwarded = email.message_from_bytes(appended[0][1], policy=email.policy.default)
        assert forwarded["X-MSS-Original-Message-ID"] == "<targets3@lab.a.example>"
        # an attempt whose answer was lost, made again: found by UID SEARCH HEADER, not appended twice
        from mssmail.store.service import Store

        url = instance_db_url or f"sqlite:///{inst.data / 'mss.db'}"
        with Store(url, inst.data / "blobs", pool_size=2) as store:
            again = store.blobs.read(imap_job["payload"]["input_sha256"])
        answer = imap_target.append(imap_url, again, {"ca_file": str(inst.ca_file), "user": target_box,
                                                      "password_file": str(password)}, 30)
        assert answer.startswith("present: UID")
        assert len(_imap_messages(inst, target_box)) == 1
        # mss connector test: the imap rule is the one left
        tested = inst.mss("connector", "test", str(rules[2]["id"]), "--file", str(SAMPLES / "hps_02_multi.hps"),
                          "--json")
        report = json.loads(tested.stdout)
        assert report["answers"][0]["ok"] and report["answers"][0]["answer"].startswith("appended")
        assert len(_imap_messages(inst, target_box)) == 2
    finally:
        inst.stop()
        smtp_peer.close()
        fhir_server.close()
    patients = data.count(b"\rP|") + data.count(b"\nP|")
    assert len(fhir_server.received) == patients >= 2
    for request in fhir_server.received:
        assert request["headers"]["Authorization"] == "Bearer jeton-de-test"
        assert Bundle.model_validate(json.loads(request["body"])).type == "transaction"
    (received,) = smtp_peer.received
    assert received[1] == ["integration@dui.example"]
    forwarded = email.message_from_bytes(received[2], policy=email.policy.default)
    assert forwarded["X-MSS-Original-Message-ID"] == "<targets2@lab.a.example>"
    assert forwarded["Resent-From"].addresses[0].addr_spec == DUI
    log = (inst.data / "logs" / "mss.log").read_text()
    assert "jeton-de-test" not in log and "connector.delivered" in log
