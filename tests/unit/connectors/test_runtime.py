"""The connector runtime on a real store (SQLite and PostgreSQL): rules, the route job
a delivery inserts in its own transaction, routing (first match wins, fan-out, no
rule), tagging, quarantine, and the folder target exactly once across a crash between
the recorded step and the rename."""

from __future__ import annotations

import json
import os
import types
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy

from connectors import folder, routing
from connectors.worker import ConnectorWorker
from mssmail.store.actors import Actor
from mssmail.store.connectors import DELIVER_KIND, ROUTE_KIND

SAMPLES = Path(__file__).parents[2] / "data" / "samples"
ADMIN = Actor.admin("test")
BOX = "dui@a.example"


def _mail(attachments: list[tuple[str, bytes]], body: str = "Résultats ci-joints.\n",
          sender: str = "lab@b.example", message_id: str = "<m1@b.example>") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, BOX, "Résultats", message_id
    msg.set_content(body)
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def _config(tmp_path: Path):
    """A real configuration: the acknowledgement goes through the submission path, which
    reads the domain, the space of trust and the limits."""
    from mssmail.config import Config

    config = Config()
    config.server.domain = "a.example"
    config.server.data = str(tmp_path)
    config.trust.domains = ["b.example"]
    for name, value in (("poll_interval", 1), ("lease", 60), ("mllp_timeout", 2)):
        setattr(config.connectors, name, value)
    return config


def _worker(store, tmp_path: Path) -> ConnectorWorker:
    return ConnectorWorker(_config(tmp_path), store)


def _drain(worker: ConnectorWorker) -> None:
    while worker.run_once():
        pass


def test_parse_match_and_first_match() -> None:
    assert routing.parse_match("kind=hprim_net, sender=Lab@B.example") == {"kind": "hprim_net",
                                                                        "sender": "lab@b.example"}
    assert routing.parse_match("kind=cda:74207-2") == {"kind": "cda:74207-2"}
    for bad in ("kind", "colour=red", "kind=a,kind=b"):
        with pytest.raises(ValueError):
            routing.parse_match(bad)
    rules = [types.SimpleNamespace(id=1, match={"kind": "hprim_sante"}),
             types.SimpleNamespace(id=2, match={"domain": "b.example"}),
             types.SimpleNamespace(id=3, match={})]
    assert routing.first_match(rules, kind="hprim_net", container="", sender="lab@b.example").id == 2
    assert routing.first_match(rules, kind="hprim_sante", container="", sender="lab@b.example").id == 1
    assert routing.first_match(rules, kind="hprim_net", container="", sender="x@c.example").id == 3
    assert routing.first_match(rules[:2], kind="cda:74207-2", container="xdm", sender="x@c.example") is None
    assert routing.matches({"kind": "xdm"}, kind="cda:74207-2", container="xdm", sender="")


def test_output_name_is_deterministic_and_safe() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 3, 12, 8, 15, 0, tzinfo=UTC)
    name = routing.output_name(when, "LAB0042", "Duvernoy-Lévêque / ../x", "abcdef0123456789")
    assert name == "20260312081500_LAB0042_DUVERNOY-LEVEQUEX_abcdef01.hpr"
    assert "/" not in routing.output_name(when, "../..", "", "k" * 64, "txt")


def test_rules_are_stored_ordered_and_validated(store) -> None:
    store.create_mailbox(BOX)
    first = store.add_connector_rule(ADMIN, BOX, "folder", ["/srv/a"], match={"kind": "hprim_net"})
    second = store.add_connector_rule(ADMIN, BOX, "folder", ["/srv/b", "/srv/c"])
    assert [r.id for r in store.connector_rules(BOX)] == [first.id, second.id]
    assert store.connector_rules(BOX)[1].targets == ("/srv/b", "/srv/c")
    for args in (("fhir", ["ftp://x"]), ("smtp", ["smtp://x"]), ("imap", ["imap:///"]),
                 ("mllp", ["nohost"]), ("folder", ["relative"]), ("folder", [])):
        with pytest.raises(ValueError):
            store.add_connector_rule(ADMIN, BOX, *args)
    with pytest.raises(ValueError):
        store.add_connector_rule(ADMIN, BOX, "folder", ["/srv"], match={"kind": "pdf"})
    store.remove_connector_rule(ADMIN, first.id)
    assert [r.id for r in store.connector_rules()] == [second.id]


def test_a_delivery_inserts_one_route_job_only_where_rules_exist(store) -> None:
    store.create_mailbox(BOX)
    store.create_mailbox("plain@a.example")
    store.add_connector_rule(ADMIN, BOX, "folder", ["/srv/dui"])
    raw = _mail([("res.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes())])
    outcomes = store.deliver(raw, [BOX, "plain@a.example"], sender="lab@b.example")
    jobs = store.list_jobs(kind=ROUTE_KIND)
    assert [(j.mailbox, j.message_id) for j in jobs] == [(BOX, outcomes[BOX].message_id)]


def test_route_then_deliver_to_a_folder_with_fan_out(store, tmp_path: Path) -> None:
    store.create_mailbox(BOX)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    store.add_connector_rule(ADMIN, BOX, "folder", [str(tmp_path / "never")], match={"kind": "hprim_sante"})
    store.add_connector_rule(ADMIN, BOX, "folder", [str(one), str(two)], match={"domain": "b.example"})
    data = (SAMPLES / "hprnet_02_multi.hpr").read_bytes()
    outcome = store.deliver(_mail([("multi.hpr", data)]), [BOX], sender="lab@b.example")[BOX]
    worker = _worker(store, tmp_path)
    _drain(worker)
    delivered = store.list_jobs(kind=DELIVER_KIND)
    records = len(routing_parts(data))
    assert records >= 2
    assert len(delivered) == 2 * records and all(j.state == "done" for j in delivered)
    assert len(list(one.glob("*.hpr"))) == records == len(list(two.glob("*.hpr")))
    # each file is its record's original lines
    assert b"".join(sorted(p.read_bytes() for p in one.glob("*.hpr"))) != b""
    assert not (tmp_path / "never").exists()
    ref = store.open_folder(ADMIN, BOX, "INBOX")
    summary = store.message_summary(ref, outcome.uid)
    assert "$HPRIM" in summary.flags and "hprim_net" in summary.documents
    # route job run again (a crash before it completed): no new delivery job
    key = store.list_jobs(kind=ROUTE_KIND)[0].key
    assert key
    with store.db.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE jobs SET state = 'pending' WHERE kind = 'connector.route'")
    _drain(worker)
    assert len(store.list_jobs(kind=DELIVER_KIND)) == 2 * records


def routing_parts(data: bytes):
    from connectors.formats import parse_hprim_net
    from connectors.formats.summary import parts

    return parts(parse_hprim_net(data))


def test_no_matching_rule_leaves_the_message_untouched(store, tmp_path: Path) -> None:
    store.create_mailbox(BOX)
    store.add_connector_rule(ADMIN, BOX, "folder", [str(tmp_path)], match={"sender": "other@c.example"})
    outcome = store.deliver(_mail([("r.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes())]), [BOX],
                            sender="lab@b.example")[BOX]
    _drain(_worker(store, tmp_path))
    assert store.list_jobs(kind=DELIVER_KIND) == []
    assert list(tmp_path.glob("*.hpr")) == []
    with store.db.engine.connect() as connection:
        details = [json.loads(d) if isinstance(d, str) else d for d in connection.exec_driver_sql(
            "SELECT details FROM audit_events WHERE action = 'connector.routed'").scalars()]
    assert any(d.get("outcome") == "no matching rule" for d in details)
    ref = store.open_folder(ADMIN, BOX, "INBOX")
    assert store.message_summary(ref, outcome.uid).uid == outcome.uid


def test_a_bad_file_is_quarantined_and_only_it_fails(store, tmp_path: Path) -> None:
    store.create_mailbox(BOX)
    target = tmp_path / "dui"
    target.mkdir()
    store.add_connector_rule(ADMIN, BOX, "folder", [str(target)])
    good = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes()
    bad = b"H|^~\\&|bad\rOBX|1|NM|x\r"
    store.deliver(_mail([("bad.hps", bad), ("good.hpr", good)]), [BOX], sender="lab@b.example")
    _drain(_worker(store, tmp_path))
    assert len(list(target.glob("*.hpr"))) == 1
    reports = list((tmp_path / "connectors" / "quarantine").glob("*/error.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["kind"] == "hprim_sante" and report["message"]
    assert (reports[0].parent / "bad.hps").read_bytes() == bad
    with store.db.engine.connect() as connection:
        text = " ".join(str(d) for d in connection.execute(sqlalchemy.text(
            "SELECT details FROM audit_events WHERE action LIKE 'connector.%'")).scalars())
    assert "DUVERNOY" not in text.upper()  # no patient name in the audit


def test_hprim_net_in_the_text_body_is_routed(store, tmp_path: Path) -> None:
    store.create_mailbox(BOX)
    store.add_connector_rule(ADMIN, BOX, "folder", [str(tmp_path)], match={"kind": "hprim_net"})
    body = (SAMPLES / "hprnet_01_abnormal.hpr").read_text("utf-8", "replace")
    store.deliver(_mail([], body=body), [BOX], sender="lab@b.example")
    _drain(_worker(store, tmp_path))
    assert len(list(tmp_path.glob("*.hpr"))) == 1


def test_folder_target_crash_between_record_and_rename(tmp_path: Path) -> None:
    progress: dict = {}

    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    with pytest.raises(Crash):
        folder.deliver(tmp_path, "a.hpr", b"one", progress, progress.update, after_record=crash)
    assert progress["tmp"] == str(tmp_path / ".mss-tmp" / "a.hpr")
    assert not (tmp_path / "a.hpr").exists()
    # restart: the recorded temp file is there, so the rename is redone
    assert folder.deliver(tmp_path, "a.hpr", b"one", progress, progress.update) == "renamed"
    assert (tmp_path / "a.hpr").read_bytes() == b"one"
    # the software takes the file; a third run (crash before completing) writes nothing
    os.unlink(tmp_path / "a.hpr")
    assert folder.deliver(tmp_path, "a.hpr", b"one", progress, progress.update) == "delivered-before"
    assert list(tmp_path.iterdir()) == [tmp_path / ".mss-tmp"]


def test_staged_temp_files_are_the_route_attempts_own(tmp_path: Path) -> None:
    """A route job's attempt stages under its own name; a later attempt (the earlier one
    crashed before its commit, so nothing recorded its file) removes the earlier files;
    the recorded one is published once, and a vanished one reads as delivered before."""
    first = folder.stage(tmp_path, "a.hpr", b"one", 7, 1)
    other = folder.stage(tmp_path, "a.hpr", b"one", 8, 1)  # another route job of the same file
    assert first.name == "7.1-a.hpr" and first.read_bytes() == b"one"
    second = folder.stage(tmp_path, "a.hpr", b"one", 7, 2)
    assert not first.exists() and second.exists() and other.exists()
    assert folder.recorded_temp(tmp_path, "a.hpr", {"tmp": str(second)}) == second
    assert folder.recorded_temp(tmp_path, "a.hpr", {"tmp": str(tmp_path / "elsewhere" / "7.2-a.hpr")}) is None
    assert folder.publish_staged(second, tmp_path / "a.hpr", b"one") == "written"
    folder.sync_directories([tmp_path, tmp_path])
    assert folder.publish_staged(second, tmp_path / "a.hpr", b"one") == "present"
    os.unlink(tmp_path / "a.hpr")
    assert folder.publish_staged(second, tmp_path / "a.hpr", b"one") == "delivered-before"
    with pytest.raises(folder.TemporaryError):
        folder.stage(tmp_path / "missing", "a.hpr", b"x", 9, 1)
    (tmp_path / "b.hpr").write_bytes(b"theirs")
    staged = folder.stage(tmp_path, "b.hpr", b"ours", 9, 1)
    with pytest.raises(folder.PermanentError):
        folder.publish_staged(staged, tmp_path / "b.hpr", b"ours")
    assert (tmp_path / "b.hpr").read_bytes() == b"theirs"


def test_folder_target_never_overwrites_a_different_file(tmp_path: Path) -> None:
    (tmp_path / "a.hpr").write_bytes(b"theirs")
    with pytest.raises(folder.PermanentError):
        folder.deliver(tmp_path, "a.hpr", b"ours", {}, lambda step: None)
    assert (tmp_path / "a.hpr").read_bytes() == b"theirs"
    assert folder.deliver(tmp_path, "b.hpr", b"x", {}, lambda step: None) == "written"
    assert folder.deliver(tmp_path, "b.hpr", b"x", {}, lambda step: None) == "present"
    with pytest.raises(folder.TemporaryError):
        folder.deliver(tmp_path / "missing", "c.hpr", b"x", {}, lambda step: None)


class _Killed(BaseException):
    """Stands for kill -9 at a point of the worker (nothing after it runs)."""


def _routed_once(store, tmp_path: Path, target: Path, message_id: str = "<m1@b.example>") -> None:
    store.deliver(_mail([("r.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes())], message_id=message_id),
                  [BOX], sender="lab@b.example")


def _die(*args, **kwargs):
    raise _Killed


def test_worker_crash_after_record_restart_delivers_once(store, tmp_path: Path, monkeypatch) -> None:
    """The job itself, claimed (its folder could not take the file when the message was
    routed): killed after its checkpoint, claimed again once its lease ran out, it
    finishes the rename; exactly one file."""
    from datetime import UTC, datetime, timedelta

    store.create_mailbox(BOX)
    target = tmp_path / "dui"
    store.add_connector_rule(ADMIN, BOX, "folder", [str(target)])
    _routed_once(store, tmp_path, target)
    worker = _worker(store, tmp_path)
    worker.run_once()  # route: the folder is missing, so the delivery job is left pending
    (pending,) = store.list_jobs(kind=DELIVER_KIND)
    assert pending.state == "pending" and pending.progress == {}
    target.mkdir()
    real = folder.deliver

    def dying(*args, **kwargs):
        return real(*args[:5], after_record=_die)

    monkeypatch.setattr(folder, "deliver", dying)
    with pytest.raises(_Killed):
        worker.run_once()
    monkeypatch.setattr(folder, "deliver", real)
    job = store.list_jobs(kind=DELIVER_KIND)[0]
    assert job.state == "running" and "tmp" in job.progress and list(target.glob("*.hpr")) == []
    assert not worker.run_once()  # still leased
    later = _worker(store, tmp_path)
    later.worker = "another"
    assert later.run_once(now=datetime.now(UTC) + timedelta(seconds=120))
    assert store.get_job(job.id).state == "done"
    assert len(list(target.glob("*.hpr"))) == 1 and list((target / ".mss-tmp").iterdir()) == []


def _one_message_for_a_folder(store, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A folder connector on BOX (target `dui/`) and one HPRIM message delivered to it,
    not routed yet: the target and a worker."""
    store.create_mailbox(BOX)
    target = tmp_path / "dui"
    target.mkdir()
    store.add_connector_rule(ADMIN, BOX, "folder", [str(target)])
    _routed_once(store, tmp_path, target)
    return target, _worker(store, tmp_path)


def test_a_route_stages_the_file_and_publishes_it_without_a_claim(store, tmp_path: Path) -> None:
    """The usual way: one run of the worker routes the message, writes the temp file in
    the route's transaction (the delivery job inserted already claimed, the temp file
    recorded), renames it after the commit and completes the job: one attempt, no claim
    of its own; the audit and the acknowledgement check as for a claimed delivery."""
    target, worker = _one_message_for_a_folder(store, tmp_path)
    assert worker.run_once()
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "done" and job.attempts == 1 and job.progress["outcome"] == "written"
    assert job.progress["tmp"].startswith(str(target / ".mss-tmp") + "/")
    (file,) = target.glob("*.hpr")
    assert file.name == job.payload["name"] and list((target / ".mss-tmp").iterdir()) == []
    assert not worker.run_once()  # nothing left to claim
    with store.db.engine.connect() as connection:
        actions = list(connection.execute(sqlalchemy.text(
            "SELECT action FROM audit_events WHERE action LIKE 'connector.%' ORDER BY id")).scalars())
    assert actions == ["connector.received", "connector.parsed", "connector.routed", "connector.delivered",
                       "connector.mdn_sent"]  # mdn_sent: "not asked"


def _killed_at(store, tmp_path: Path, monkeypatch, step: str):  # type: ignore[no-untyped-def]
    """A folder connector whose worker routed a message (the staged job committed) and
    was killed at `step`: a function of connectors/folder.py, or else a method of the
    worker. The target and that worker."""
    target, worker = _one_message_for_a_folder(store, tmp_path)
    monkeypatch.setattr(folder if hasattr(folder, step) else worker, step, _die)
    with pytest.raises(_Killed):
        worker.run_once()
    monkeypatch.undo()
    return target, worker


def test_a_kill_between_the_route_commit_and_the_rename(store, tmp_path: Path, monkeypatch) -> None:
    """Killed after the route committed the staged job, before the rename: the job is
    ours (running, temp file recorded) until its lease runs out; the next worker renames
    the recorded temp file: one file."""
    from datetime import UTC, datetime, timedelta

    target, worker = _killed_at(store, tmp_path, monkeypatch, "publish_staged")
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "running" and job.lease_owner == worker.worker and Path(job.progress["tmp"]).exists()
    assert list(target.glob("*.hpr")) == []
    later = _worker(store, tmp_path)
    later.worker = "another"
    assert later.run_once(now=datetime.now(UTC) + timedelta(seconds=120))
    done = store.get_job(job.id)
    assert done.state == "done" and done.progress["outcome"] == "renamed" and done.attempts == 2
    assert len(list(target.glob("*.hpr"))) == 1 and list((target / ".mss-tmp").iterdir()) == []


def test_a_kill_after_the_rename_before_completion(store, tmp_path: Path, monkeypatch) -> None:
    """Killed after the rename, before the completion's commit; the software takes the
    file meanwhile: the next worker finds the recorded temp file gone and completes the
    job as delivered before, writing nothing again."""
    from datetime import UTC, datetime, timedelta

    target, _ = _killed_at(store, tmp_path, monkeypatch, "_complete_published")
    (file,) = target.glob("*.hpr")
    file.unlink()  # the DUI took it
    later = _worker(store, tmp_path)
    later.worker = "another"
    assert later.run_once(now=datetime.now(UTC) + timedelta(seconds=120))
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "done" and job.progress["outcome"] == "delivered-before"
    assert list(target.glob("*.hpr")) == [] and list((target / ".mss-tmp").iterdir()) == []


def test_a_batch_of_routes_commits_together_and_a_failure_fails_only_itself(store, tmp_path: Path,
                                                                           monkeypatch) -> None:
    """The route jobs of a claimed batch share one transaction; when one of them fails
    the transaction is rolled back and each runs on its own (here the failure does not
    come back): all are delivered, once, in one attempt each."""
    store.create_mailbox(BOX)
    target = tmp_path / "dui"
    target.mkdir()
    store.add_connector_rule(ADMIN, BOX, "folder", [str(target)])
    for n in range(3):
        store.deliver(_mail([(f"r{n}.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes())],
                            message_id=f"<batch{n}@b.example>"), [BOX], sender="lab@b.example")
    worker = _worker(store, tmp_path)
    real = worker._route_unit
    calls: list[int] = []

    def flaky(job, staged):
        calls.append(job.id)
        if len(calls) == 2:  # the second job of the batch, the first time only
            raise RuntimeError("a bug in one message")
        return real(job, staged)

    monkeypatch.setattr(worker, "_route_unit", flaky)
    assert worker.run_once()
    routes = sorted(store.list_jobs(kind=ROUTE_KIND), key=lambda j: j.id)
    assert [j.state for j in routes] == ["done", "done", "done"]  # alone, each went through
    assert len(calls) == 2 + 3
    assert len(list(target.glob("*.hpr"))) == 3 and list((target / ".mss-tmp").iterdir()) == []
    assert all(j.state == "done" and j.attempts == 1 for j in store.list_jobs(kind=DELIVER_KIND))


def test_the_same_message_again_stages_nothing_twice(store, tmp_path: Path, monkeypatch) -> None:
    """The sender sends the message again (same Message-ID, a second copy in the
    mailbox) while the first delivery is still recorded but not renamed: the second
    route inserts nothing and writes no temp file over the first one's; the first job,
    taken over, publishes one file, and the second copy adds none."""
    from datetime import UTC, datetime, timedelta

    target, worker = _killed_at(store, tmp_path, monkeypatch, "publish_staged")
    (first,) = list((target / ".mss-tmp").iterdir())
    _routed_once(store, tmp_path, target)  # the same Message-ID
    assert worker.run_once()  # the second route
    assert list((target / ".mss-tmp").iterdir()) == [first] and list(target.glob("*.hpr")) == []
    later = _worker(store, tmp_path)
    later.worker = "another"
    _drain_at = datetime.now(UTC) + timedelta(seconds=120)
    while later.run_once(now=_drain_at):
        pass
    assert len(store.list_jobs(kind=DELIVER_KIND)) == 1 and len(store.list_jobs(kind=ROUTE_KIND)) == 2
    assert len(list(target.glob("*.hpr"))) == 1 and list((target / ".mss-tmp").iterdir()) == []


def test_a_missing_directory_is_retried_then_dead(store, tmp_path: Path) -> None:
    store.create_mailbox(BOX)
    store.add_connector_rule(ADMIN, BOX, "folder", [str(tmp_path / "later")])
    store.deliver(_mail([("r.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes())]), [BOX],
                  sender="lab@b.example")
    worker = _worker(store, tmp_path)
    worker.run_once()
    worker.run_once()
    job = store.list_jobs(kind=DELIVER_KIND)[0]
    assert job.state == "failed" and "does not exist" in job.last_error
    assert job.next_attempt > job.created_at
    worker.settings.max_attempts = 1
    from datetime import UTC, datetime, timedelta

    assert worker.run_once(now=datetime.now(UTC) + timedelta(hours=7))
    dead = store.get_job(job.id)
    assert dead.state == "dead" and dead.payload["input_sha256"] and store.blobs.exists(dead.payload["input_sha256"])
    assert store.retry_dead(ADMIN, job_id=job.id) == 1
    (tmp_path / "later").mkdir()
    _drain(worker)
    assert store.get_job(job.id).state == "done" and len(list((tmp_path / "later").glob("*.hpr"))) == 1


def test_xdm_and_dlu_attachments_are_routed_and_tagged(store, tmp_path: Path) -> None:
    """kind=xdm takes every document of an IHE_XDM.ZIP (the archive as received, once);
    a plain DLU goes by its LOINC; both tag the message $DLU."""
    from tests.unit.connectors.samples import make_zip, xdm_files

    store.create_mailbox(BOX)
    archives, documents = tmp_path / "xdm", tmp_path / "dlu"
    archives.mkdir()
    documents.mkdir()
    store.add_connector_rule(ADMIN, BOX, "folder", [str(archives)], match={"kind": "xdm"})
    store.add_connector_rule(ADMIN, BOX, "folder", [str(documents)], match={"kind": "cda:74207-2"})
    archive = make_zip(xdm_files())
    dlu = (SAMPLES / "dlu_01_full.xml").read_bytes()
    first = store.deliver(_mail([("IHE_XDM.ZIP", archive)], message_id="<x1@b.example>"), [BOX],
                          sender="lab@b.example")[BOX]
    second = store.deliver(_mail([("dlu.xml", dlu)], message_id="<x2@b.example>"), [BOX],
                           sender="lab@b.example")[BOX]
    _drain(_worker(store, tmp_path))
    (zipped,) = archives.glob("*.zip")
    assert zipped.read_bytes() == archive
    (xml,) = documents.glob("*.xml")
    assert xml.read_bytes() == dlu
    ref = store.open_folder(ADMIN, BOX, "INBOX")
    for outcome in (first, second):
        assert "$DLU" in store.message_summary(ref, outcome.uid).flags
