"""The `pickup` target on a real `mss serve` (SQLite and PostgreSQL): HPRIM files a lab's
software writes into a folder are sent from the lab's mailbox, signed per policy,
through the one submission path, to the doctor each file names (RPPS looked up in the
directory); what cannot be sent goes to failed/ with its reason; a file found again
after a crash (its marker left, its message already in Sent) is not sent twice."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import time
from pathlib import Path

from tests.support.instance import MssInstance
from tests.support.mailbox import contents, summaries

DOMAIN = "a.example"
SAMPLE = Path(__file__).parents[1] / "data" / "samples" / "hprnet_01_abnormal.hpr"
LAB, JEAN = f"laboratoire@{DOMAIN}", f"jean.martin@{DOMAIN}"


def for_recipient(code: str, name: str) -> bytes:
    """The sample with its line 12 (recipient code, name) replaced."""
    lines = SAMPLE.read_bytes().split(b"\r\n")
    lines[11] = f"{code:<10}{name}".encode("latin-1")
    return b"\r\n".join(lines)


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _store(inst: MssInstance, url):
    from mssmail.store.service import Store

    return Store(url or f"sqlite:///{inst.data / 'mss.db'}", inst.data / "blobs", pool_size=2)


def test_pickup_sends_each_file_once_to_the_doctor_it_names(instance_factory, instance_db_url,
                                                            tmp_path: Path) -> None:
    inst: MssInstance = instance_factory(DOMAIN, database_url=instance_db_url)
    inst.configure("connectors", "poll_interval", '"1s"')
    inst.configure("connectors", "pickup_settle", '"0s"')
    inst.configure("crypto", "sign_outgoing", "true")
    inst.mss("cert", "issue", LAB, "--usage", "signature")  # the lab's mailbox signs what it sends
    folder = tmp_path / "sortie-labo"
    folder.mkdir()
    added = json.loads(inst.mss("connector", "add", LAB, "--type", "pickup", "--target", str(folder),
                                "--json").stdout)
    assert added["type"] == "pickup"
    refused = inst.mss("connector", "add", LAB, "--type", "pickup", "--target", str(folder), "--match",
                       "kind=hprim_net", check=False)
    assert refused.returncode != 0 and "pickup" in (refused.stderr + refused.stdout)
    good = for_recipient("MED0815", "DR MARTIN JEAN")  # found by name: one professional
    (folder / "resultat-martin.hpr").write_bytes(good)
    (folder / "inconnu.hpr").write_bytes(SAMPLE.read_bytes())  # DR LEBRETON ARNAUD: not in the directory
    (folder / "casse.hpr").write_bytes(b"ceci n'est pas un fichier HPRIM\r\n")
    (folder / ".en-cours.hpr").write_bytes(good)  # hidden: still being written by the software
    inst.start("connectors")
    try:
        _wait(lambda: (folder / "sent" / "resultat-martin.hpr").exists()
              and (folder / "failed" / "inconnu.hpr.error.json").exists()
              and (folder / "failed" / "casse.hpr.error.json").exists(), "the three files handled")
        assert (folder / ".en-cours.hpr").exists()
        unknown = json.loads((folder / "failed" / "inconnu.hpr.error.json").read_text())
        assert "not found once in the directory" in unknown["error"] and "LEBRETON" in unknown["error"]
        assert "not a valid HPRIM file" in json.loads((folder / "failed" / "casse.hpr.error.json").read_text())["error"]
        # a crash after the submission, before the move: the file is back with its marker
        digest = hashlib.sha256(good).hexdigest()
        (folder / "resultat-martin.hpr").write_bytes(good)
        (folder / ".mss-pickup").mkdir(exist_ok=True)
        (folder / ".mss-pickup" / f"{digest}.sending").write_bytes(b"")
        _wait(lambda: (folder / "sent" / "resultat-martin.2.hpr").exists(), "the replayed file moved to sent/")
        assert not (folder / ".mss-pickup" / f"{digest}.sending").exists()
    finally:
        assert inst.stop() == 0
    with _store(inst, instance_db_url) as store:
        inbox = contents(store, JEAN)
        assert len(inbox) == 1, "sent once, not again after the replay"
        assert len(summaries(store, LAB, "Sent")) == 1
    message = email.message_from_bytes(inbox[0], policy=email.policy.default)
    assert message["From"] == LAB and message["Subject"] == "Résultats d'analyses (HPRIM)"
    assert message.get_content_type() == "multipart/signed"  # [crypto] sign_outgoing: per policy
    (attachment,) = [p for p in message.walk() if p.get_filename() == "resultat-martin.hpr"]
    assert attachment.get_payload(decode=True) == good
    audit = inst.mss("audit", "export", check=False).stdout
    assert "connector.pickup" in audit and "DUVERNOY" not in audit
