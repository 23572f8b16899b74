"""The results index on a real store (SQLite and PostgreSQL): the worker indexes the
HPRIM results and CDA documents of a delivered message (with or without connector
rules), the store lists them per patient (access-checked, audited), downloads their
files (audited reads) and marks them retrieved with `$HprimRecupere`."""

from __future__ import annotations

import io
import types
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.worker import ConnectorWorker
from mssmail.store.actors import Actor
from mssmail.store.connectors import INDEX_KIND, ROUTE_KIND
from mssmail.store.errors import AccessDenied
from mssmail.store.models import AuditEvent, IndexedResult
from mssmail.store.results import RETRIEVED_KEYWORD, ResultEntry

SAMPLES = Path(__file__).parents[2] / "data" / "samples"
DOC, OTHER, DUI = "doc@a.example", "other@a.example", "dui@a.example"
ADMIN = Actor.admin("test")


def _mail(attachments: list[tuple[str, bytes]], *, to: str = DOC, body: str = "Résultats ci-joints.\n",
          message_id: str = "<r1@b.example>") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "lab@b.example", to, "Résultats", message_id
    msg.set_content(body)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def _worker(store, tmp_path: Path) -> ConnectorWorker:
    settings = types.SimpleNamespace(poll_interval=1, lease=60, retry_initial=30, retry_max_interval=6 * 3600,
                                     max_age=48 * 3600, max_attempts=20, mllp_timeout=2)
    config = types.SimpleNamespace(connectors=settings, server=types.SimpleNamespace(data=str(tmp_path)))
    return ConnectorWorker(config, store)


def _drain(worker: ConnectorWorker) -> None:
    while worker.run_once():
        pass


def _actions(store, op: str) -> list[dict]:
    with store.db.read() as s:
        return [e.details for e in s.execute(select(AuditEvent).where(AuditEvent.action == "read")).scalars()
                if e.details.get("op") == op]


def test_a_personal_mailbox_without_rules_gets_its_results_indexed(store, tmp_path: Path) -> None:
    store.create_mailbox(DOC)
    hpr = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes()
    outcome = store.deliver(_mail([("resultats.hpr", hpr)]), [DOC], sender="lab@b.example")[DOC]
    # a plain mail (no attachment) costs no job; the HPRIM one gets an index job, no route job
    store.deliver(_mail([], message_id="<plain@b.example>"), [DOC], sender="lab@b.example")
    assert [j.kind for j in store.list_jobs()] == [INDEX_KIND]
    _drain(_worker(store, tmp_path))
    patients = store.results_by_patient(Actor.user(DOC), DOC)
    assert len(patients) == 1
    patient = patients[0]
    assert (patient.family, patient.given, patient.birth_date) == ("DUVERNOY", "MADELEINE", "1948-02-14")
    assert patient.ins is None and patient.insured_nir == "2480226123456"  # an NIR, never taken for an INS
    (document,) = patient.documents
    assert document.new and document.kind == "hprim_net" and document.lab == "LAB0042"
    assert (document.result_count, document.abnormal_count) == (7, 6)
    assert (document.folder, document.uid) == ("INBOX", outcome.uid)
    (table,) = document.tables
    assert table.title == "Demande 2603120042" and table.date == "2026-03-12"
    first = table.lines[0]
    assert (first.label, first.value, first.unit, first.reference, first.direction) == \
        ("Hematies", "3.52", "T/L", "3.80 – 5.40", "low")
    assert [line.direction for line in table.lines] == ["low", "low", "high", None, "high", "high", "high"]
    # the message is tagged as before, and the listing was an audited read without names
    summary = store.message_summary(store.open_folder(ADMIN, DOC, "INBOX"), outcome.uid)
    assert "$HPRIM" in summary.flags
    listed = _actions(store, "results")
    assert listed and listed[-1]["documents"] == 1 and "DUVERNOY" not in str(listed)
    # no quarantine in a mailbox without rules, even for an attachment that is not HPRIM
    store.deliver(_mail([("notes.txt", b"pas du HPRIM\n")], message_id="<txt@b.example>"), [DOC],
                  sender="lab@b.example")
    _drain(_worker(store, tmp_path))
    assert not (tmp_path / "connectors" / "quarantine").exists()


def test_an_hprim_text_body_without_rules_is_indexed_too(store, tmp_path: Path) -> None:
    """An Apicrypt-style mail whose text body is the HPRIM Net report, no attachment, in a
    mailbox without rules: an index job (the summary saw the LAB marker), its results
    listed; a plain body that only mentions the marker parses as nothing and lists none."""
    store.create_mailbox(DOC)
    report = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes().decode("latin-1")
    outcome = store.deliver(_mail([], body=report, message_id="<body@b.example>"), [DOC],
                            sender="lab@b.example")[DOC]
    store.deliver(_mail([], body="Le bloc ****LAB**** manque ici.\n", message_id="<mention@b.example>"), [DOC],
                  sender="lab@b.example")
    assert [j.kind for j in store.list_jobs()] == [INDEX_KIND, INDEX_KIND]
    _drain(_worker(store, tmp_path))
    (patient,) = store.results_by_patient(Actor.user(DOC), DOC)
    assert (patient.family, patient.given) == ("DUVERNOY", "MADELEINE")
    (document,) = patient.documents
    assert document.kind == "hprim_net" and (document.folder, document.uid) == ("INBOX", outcome.uid)
    assert (document.result_count, document.abnormal_count) == (7, 6)
    assert not (tmp_path / "connectors" / "quarantine").exists()


def test_grouped_by_patient_new_first_download_marks_retrieved(store, tmp_path: Path) -> None:
    store.create_mailbox(DOC)
    store.create_mailbox(OTHER)
    multi = (SAMPLES / "hprnet_02_multi.hpr").read_bytes()
    hps = (SAMPLES / "hps_02_multi.hps").read_bytes()
    store.deliver(_mail([("multi.hpr", multi)], message_id="<a@b.example>"), [DOC], sender="lab@b.example")
    store.deliver(_mail([("bilan.hps", hps), ("cr.xml", (SAMPLES / "dlu_01_full.xml").read_bytes())],
                        message_id="<b@b.example>"), [DOC], sender="lab@b.example")
    worker = _worker(store, tmp_path)
    _drain(worker)
    doc = Actor.user(DOC)
    patients = store.results_by_patient(doc, DOC)
    documents = [d for p in patients for d in p.documents]
    kinds = sorted({d.kind for d in documents})
    assert "hprim_net" in kinds and "hprim_sante" in kinds and any(k.startswith("cda:") for k in kinds)
    assert len({(p.family, p.birth_date) for p in patients}) == len(patients)  # one group per patient
    assert store.new_results_count(doc, DOC) == len(documents)
    # another user reaches nothing; a read-only delegate lists but may not download
    with pytest.raises(AccessDenied):
        store.results_by_patient(Actor.user(OTHER), DOC)
    store.add_delegation(DOC, OTHER, "read")
    assert len(store.results_by_patient(Actor.user(OTHER), DOC)) == len(patients)
    with pytest.raises(AccessDenied):
        store.results_zip(Actor.user(OTHER), DOC, [d.id for d in documents])
    # download the HPRIM Net ones: each file once, its bytes as sent
    net = [d.id for d in documents if d.kind == "hprim_net"]
    download = store.results_zip(doc, DOC, net, ip="192.0.2.1")
    with zipfile.ZipFile(io.BytesIO(download.data)) as archive:
        assert archive.namelist() == ["multi.hpr"]
        assert archive.read("multi.hpr") == multi
    assert set(download.documents) == set(net)
    reads = [d for d in _actions_all(store) if d.get("part")]
    assert reads, "the file was read through message_part (an audited read with its part)"
    after = store.results_by_patient(doc, DOC)
    by_id = {d.id: d for p in after for d in p.documents}
    assert all(not by_id[i].new for i in net) and all(by_id[d.id].new for d in documents if d.id not in net)
    assert after[0].new_count > 0  # patients with new results come first
    assert [p.new_count > 0 for p in after] == sorted([p.new_count > 0 for p in after], reverse=True)
    ref = store.open_folder(ADMIN, DOC, "INBOX")
    flagged = {m.uid: m.flags for m in store.message_page(ref).items}
    retrieved_uid = by_id[net[0]].uid
    assert RETRIEVED_KEYWORD in flagged[retrieved_uid]
    assert store.results_by_patient(doc, DOC, new_only=True) and \
        all(d.new for p in store.results_by_patient(doc, DOC, new_only=True) for d in p.documents)


def _actions_all(store) -> list[dict]:
    with store.db.read() as s:
        return [e.details for e in s.execute(select(AuditEvent).where(AuditEvent.action == "read")).scalars()]


def test_indexing_is_idempotent_follows_moves_and_forgets_expunged(store, tmp_path: Path) -> None:
    store.create_mailbox(DUI, "applicative")
    target = tmp_path / "dui"
    target.mkdir()
    store.add_connector_rule(ADMIN, DUI, "folder", [str(target)])
    hpr = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes()
    outcome = store.deliver(_mail([("r.hpr", hpr)], to=DUI), [DUI], sender="lab@b.example")[DUI]
    assert [j.kind for j in store.list_jobs()] == [ROUTE_KIND]  # a box with rules: the route job indexes
    _drain(_worker(store, tmp_path))
    assert len(list(target.glob("*.hpr"))) == 1
    (entry,) = [d for p in store.results_by_patient(ADMIN, DUI) for d in p.documents]
    # the same entries written again (a job run twice): nothing new
    again = ResultEntry(part=entry.part, file_index=0, part_index=0, kind="hprim_net", family="DUVERNOY")
    sha = store.message_summary(store.open_folder(ADMIN, DUI, "INBOX"), outcome.uid).sha256
    assert store.index_results(Actor.system("connectors"), DUI, sha256=sha, message_id="", received_at=None,
                               entries=[again]) == 0
    with pytest.raises(AccessDenied):
        store.index_results(Actor.user(DUI), DUI, sha256=sha, message_id="", received_at=None, entries=[again])
    # moved: listed where it is now
    store.folder_create(ADMIN, DUI, "Archives")
    ref = store.open_folder(ADMIN, DUI, "INBOX")
    moved = store.move(ref, [outcome.uid], DUI, "Archives")
    (entry,) = [d for p in store.results_by_patient(ADMIN, DUI) for d in p.documents]
    assert (entry.folder, entry.uid) == ("Archives", moved.target_uids[0])
    # expunged: gone from the list, and purged at the next indexing
    archives = store.open_folder(ADMIN, DUI, "Archives")
    store.set_flags(archives, [moved.target_uids[0]], "+", ["\\Deleted"])
    store.expunge(archives)
    assert store.results_by_patient(ADMIN, DUI) == ()
    store.index_results(Actor.system("connectors"), DUI, sha256="0" * 64, message_id="", received_at=None,
                        entries=[])
    with store.db.read() as s:
        assert s.execute(select(IndexedResult.id)).all() == []


def test_gone_entries_are_purged_a_window_at_a_time(store, monkeypatch) -> None:
    """Indexing checks a bounded window of the mailbox's entries for gone messages,
    moving on call after call, so its cost does not grow with the index; every gone
    entry is still purged, within a sweep."""
    from mssmail.store import results

    monkeypatch.setattr(results, "PURGE_WINDOW", 2)
    store.create_mailbox(DUI)
    system = Actor.system("connectors")

    def left() -> int:
        with store.db.read() as s:
            return len(s.execute(select(IndexedResult.id)).all())

    # five entries of a message that is in no folder (gone at once)
    entries = [ResultEntry(part=f"{i}.0", file_index=i, part_index=0, kind="hprim_net", family="X")
               for i in range(5)]
    assert store.index_results(system, DUI, sha256="1" * 64, message_id="", received_at=None,
                               entries=entries) == 5
    assert left() == 3  # the first window only
    store.index_results(system, DUI, sha256="2" * 64, message_id="", received_at=None, entries=[])
    assert left() == 1
    store.index_results(system, DUI, sha256="2" * 64, message_id="", received_at=None, entries=[])
    assert left() == 0
