"""The connector audit events (issue 13 part 10), read back as `mss audit export` writes
them (`audit.export_jsonl`), on SQLite and PostgreSQL: received, parsed, routed,
delivered, retry, dead, quarantined, mdn_sent, each with its job key, the Message-ID,
and where it applies the target, the outcome, the error code, the size and SHA-256 of
the input; never a patient's name, and the INS only as a keyed hash."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mssmail import audit
from tests.unit.connectors.test_runtime import ADMIN, BOX, SAMPLES, _drain, _mail, _worker

DLU = (SAMPLES / "dlu_01_full.xml").read_bytes()
HPR = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes()
INS = json.loads((SAMPLES / "dlu_01_full.expected.json").read_text())["patient"]["ins"]


def _events(store) -> list[dict]:
    out = io.StringIO()
    with store.db.read() as session:
        audit.export_jsonl(session, out, 0)
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_every_step_is_an_audit_event_without_patient_data(store, tmp_path: Path) -> None:
    store.create_mailbox(BOX)
    ok, later = tmp_path / "ok", tmp_path / "later"
    ok.mkdir()
    store.add_connector_rule(ADMIN, BOX, "folder", [str(ok)], match={"kind": "cda:74207-2"})
    store.add_connector_rule(ADMIN, BOX, "folder", [str(later)], match={"kind": "hprim_net"})
    raw = _mail([("dlu.xml", DLU), ("r.hpr", HPR), ("bad.hps", b"H|^~\\&|x\rOBX|1\r")],
                message_id="<audit1@b.example>")
    store.deliver(raw, [BOX], sender="lab@b.example")
    worker = _worker(store, tmp_path)
    _drain(worker)  # route, the DLU delivered, the HPRIM one fails (no directory): retry
    worker.settings.max_attempts = 1
    worker.run_once(now=datetime.now(UTC) + timedelta(hours=7))  # dead
    _drain(worker)
    worker.run_once(now=datetime.now(UTC) + timedelta(hours=8))  # the acknowledgement, if not sent yet
    events = [e for e in _events(store) if e["action"].startswith("connector.")]
    by_action: dict[str, list[dict]] = {}
    for event in events:
        by_action.setdefault(event["action"], []).append(event["details"])
    assert set(by_action) >= {"connector.received", "connector.parsed", "connector.routed", "connector.delivered",
                              "connector.retry", "connector.dead", "connector.quarantined", "connector.mdn_sent"}
    for event in events:
        assert event["ts"] and event["mailbox"] == BOX and event["details"]["key"], event
    (received,) = by_action["connector.received"]
    assert received["message_id"] == "<audit1@b.example>" and received["size"] > 0 and received["sha256"]
    for action in ("connector.parsed", "connector.routed", "connector.delivered", "connector.retry",
                   "connector.dead", "connector.quarantined"):
        assert all(d["message_id"] == "<audit1@b.example>" for d in by_action[action]), action
    parsed = {d["format"]: d for d in by_action["connector.parsed"]}
    assert parsed["Dlu"]["sha256"] == hashlib.sha256(DLU).hexdigest() and parsed["Dlu"]["size"] == len(DLU)
    (delivered,) = by_action["connector.delivered"]
    assert delivered["target"] == str(ok) and delivered["outcome"] == "written" and delivered["sha256"]
    (retry,) = by_action["connector.retry"]
    (dead,) = by_action["connector.dead"]
    assert retry["target"] == dead["target"] == str(later) and "does not exist" in retry["error"]
    assert dead["error_code"] == 906 and dead["size"] and dead["sha256"]
    (quarantined,) = by_action["connector.quarantined"]
    assert quarantined["error_code"] == 906 and quarantined["line"] and quarantined["sha256"]
    sent = [d for d in by_action["connector.mdn_sent"] if d.get("disposition")]
    assert len(sent) == 1 and sent[0]["code"] == 906 and sent[0]["type"] == "mail"
    text = json.dumps(events, ensure_ascii=False).upper()
    for name in ("DUVERNOY", "MADELEINE"):  # the HPRIM patient
        assert name not in text
    expected = json.loads((SAMPLES / "dlu_01_full.expected.json").read_text())["patient"]
    for value in (expected["family"], expected["given"], INS):  # the DLU patient
        assert value.upper() not in text
    # the INS as a keyed hash: the same patient gives the same value, the value is not
    # the plain digest an attacker could compute from a guess
    (ins_hash,) = parsed["Dlu"]["ins"]
    assert ins_hash and ins_hash not in (hashlib.sha256(INS.encode()).hexdigest()[:32],)
    assert parsed["HprimNetFile"]["ins"] == []
