"""The connector runtime on a real `mss serve` (SQLite and PostgreSQL): an HPRIM file
sent by SMTP submission to the DUI mailbox lands exactly once in its folder, even when `mss serve`
is killed (SIGKILL) between the recorded temp file and the rename and then restarted;
a bad HPRIM file is quarantined and its message stays in the mailbox."""

from __future__ import annotations

import email.policy
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

from tests.support.instance import MssInstance
from tests.support.mailbox import summaries

DOMAIN = "a.example"
SAMPLES = Path(__file__).parents[1] / "data" / "samples"
LAB, DUI = f"laboratoire@{DOMAIN}", f"dui@{DOMAIN}"


def _mail(name: str, data: bytes, message_id: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = LAB, DUI, "Résultats", message_id
    msg.set_content("Résultats ci-joints.\n")
    msg.add_attachment(data, maintype="text", subtype="plain", filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF, as on the wire


def _send(inst: MssInstance, raw: bytes) -> None:
    """As the lab, by SMTP submission (STARTTLS, AUTH): the MX refuses local senders."""
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(inst.ca_file)))
        smtp.login(LAB, inst.passwords[LAB])
        smtp.sendmail(LAB, [DUI], raw)


def _jobs(inst: MssInstance) -> list[dict]:
    return json.loads(inst.mss("connector", "jobs", "--json").stdout)


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _instance(instance_factory, instance_db_url, tmp_path: Path) -> tuple[MssInstance, Path]:
    inst = instance_factory(DOMAIN, database_url=instance_db_url)
    inst.configure("connectors", "poll_interval", '"1s"')
    inst.configure("connectors", "lease", '"2s"')
    # `mss init --demo` made a folder connector on the DUI mailbox: replaced by the test's
    (demo,) = json.loads(inst.mss("connector", "list", "--json").stdout)
    assert demo["mailbox"] == DUI and demo["targets"] == [str((inst.data / "connectors" / "dui").resolve())]
    inst.mss("connector", "remove", str(demo["id"]))
    target = tmp_path / "dui-folder"
    target.mkdir()
    inst.mss("connector", "add", DUI, "--type", "folder", "--target", str(target), "--match", "kind=hprim_net")
    return inst, target


def _store(inst: MssInstance, instance_db_url):
    from mssmail.store.service import Store

    return Store(instance_db_url or f"sqlite:///{inst.data / 'mss.db'}", inst.data / "blobs", pool_size=2)


def test_hprim_by_smtp_lands_once_across_kill9(instance_factory, instance_db_url, tmp_path: Path) -> None:
    inst, target = _instance(instance_factory, instance_db_url, tmp_path)
    data = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes()
    inst.env["MSS_FAULT"] = "connectors.after_temp"  # the server SIGKILLs itself before the rename
    inst.start("submission", "connectors")
    _send(inst, _mail("resultats.hpr", data, "<kill9@lab.a.example>"))
    assert inst.process is not None
    assert inst.process.wait(60) == -9  # killed, as by kill -9, in the middle of the delivery
    inst.kill()
    deliver = [j for j in _jobs(inst) if j["kind"] == "connector.deliver"]
    assert len(deliver) == 1 and deliver[0]["state"] == "running" and "tmp" in deliver[0]["progress"]
    assert list(target.glob("*.hpr")) == [] and len(list((target / ".mss-tmp").iterdir())) == 1
    del inst.env["MSS_FAULT"]
    inst.start("submission", "connectors")
    try:
        _wait(lambda: [j["state"] for j in _jobs(inst) if j["kind"] == "connector.deliver"] == ["done"],
              "the delivery job to finish after the restart")
        # the same message delivered again (a sender retrying): the same job key, nothing new
        _send(inst, _mail("resultats.hpr", data, "<kill9@lab.a.example>"))
        _wait(lambda: all(j["state"] == "done" for j in _jobs(inst)) and len(
            [j for j in _jobs(inst) if j["kind"] == "connector.route"]) == 2, "the second route job")
    finally:
        inst.stop()
    files = list(target.glob("*.hpr"))
    assert len(files) == 1 and files[0].read_bytes() in data  # the record's original lines
    assert files[0].name.endswith(deliver[0]["key"][:8] + ".hpr") and "_DUVERNOY_" in files[0].name
    assert list((target / ".mss-tmp").iterdir()) == []
    assert len([j for j in _jobs(inst) if j["kind"] == "connector.deliver"]) == 1
    with _store(inst, instance_db_url) as store:
        messages = summaries(store, DUI)  # both copies stay in the mailbox, tagged
        assert len(messages) == 2 and all("$HPRIM" in m.flags for m in messages)
    log = (inst.data / "logs" / "mss.log").read_text()
    assert "connector.delivered" in log and "DUVERNOY" not in log.upper()


def test_a_bad_hprim_file_is_quarantined_and_the_message_stays(instance_factory, instance_db_url,
                                                              tmp_path: Path) -> None:
    inst, target = _instance(instance_factory, instance_db_url, tmp_path)
    inst.start("submission", "connectors")
    try:
        bad = b"H|^~\\&|x|LAB\rP|1\rOBX|1|NM|GLU\r"  # OBX without its OBR
        _send(inst, _mail("mauvais.hps", bad, "<bad@lab.a.example>"))
        quarantine = inst.data / "connectors" / "quarantine"
        _wait(lambda: list(quarantine.glob("*/error.json")), "the quarantined file")
        _wait(lambda: all(j["state"] == "done" for j in _jobs(inst)), "the route job")
    finally:
        inst.stop()
    (report_path,) = quarantine.glob("*/error.json")
    report = json.loads(report_path.read_text())
    assert report["kind"] == "hprim_sante" and report["line"] and report["message"]
    assert (report_path.parent / "mauvais.hps").read_bytes() == bad
    assert list(target.glob("*")) == []
    with _store(inst, instance_db_url) as store:
        assert len(summaries(store, DUI)) == 1
