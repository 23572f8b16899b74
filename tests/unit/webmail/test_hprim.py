"""The "Récupération Hprim" page through Starlette's TestClient on a real store: an
HPRIM result delivered and indexed by the connector worker shows by patient with its
abnormal rows bold and worded; the download is a ZIP of the file as sent (CSRF
checked, audited) that marks it retrieved ($HprimRecupere); another user sees nothing."""

from __future__ import annotations

import io
import re
import types
import zipfile
from email.message import EmailMessage
from pathlib import Path

from starlette.testclient import TestClient

from connectors.worker import ConnectorWorker
from mssmail.store.actors import Actor
from mssmail.store.results import RETRIEVED_KEYWORD
from mssmail.store.service import Store
from tests.unit.webmail.conftest import DOC, OTHER
from tests.unit.webmail.test_app import login, session_csrf
from webmail.hprim import NO_NEW_TEXT

SAMPLE = Path(__file__).parents[2] / "data" / "samples" / "hprnet_01_abnormal.hpr"


def deliver_result(store: Store, tmp_path: Path, to: str = DOC) -> int:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "lab@b.example", to, "Résultats", "<h1@b.example>"
    msg.set_content("Résultats ci-joints.")
    msg.add_attachment(SAMPLE.read_bytes(), maintype="application", subtype="octet-stream",
                       filename="DUVERNOY.hpr")
    uid = store.deliver(msg.as_bytes(), [to], sender="lab@b.example")[to].uid
    settings = types.SimpleNamespace(poll_interval=1, lease=60, retry_initial=30, retry_max_interval=3600,
                                     max_age=3600, max_attempts=3, mllp_timeout=2)
    worker = ConnectorWorker(types.SimpleNamespace(connectors=settings,
                                                   server=types.SimpleNamespace(data=str(tmp_path))), store)
    while worker.run_once():
        pass
    return uid


def test_no_results_says_so(client: TestClient) -> None:
    login(client)
    page = client.get("/hprim")
    assert page.status_code == 200
    assert "<h1>Récupération Hprim</h1>" in page.text
    assert NO_NEW_TEXT.replace("'", "&#39;") in page.text
    assert "Télécharger les fichiers HPRIM" not in page.text


def test_results_by_patient_then_download_marks_them_retrieved(client: TestClient, store: Store,
                                                               tmp_path: Path) -> None:
    uid = deliver_result(store, tmp_path)
    login(client)
    page = client.get("/hprim")
    text = page.text
    assert page.status_code == 200
    assert "DUVERNOY Madeleine" in text and "14/02/1948" in text and "2480226123456" in text
    assert 'nouveau' in text and "Télécharger les fichiers HPRIM" in text
    assert text.count('<th scope="col">') >= 5 and '<th scope="row">Hematies</th>' in text
    # abnormal rows: bold by class and worded; the normal one has no word and no class
    rows = re.findall(r"<tr( class=\"anormal\")?>\s*<th scope=\"row\">([^<]+)</th>(.*?)</tr>", text, re.S)
    by_label = {label: (bool(cls), body) for cls, label, body in rows}
    assert by_label["Hematies"][0] and "▼ bas" in by_label["Hematies"][1]
    assert by_label["Leucocytes"][0] and "▲ élevé" in by_label["Leucocytes"][1]
    assert not by_label["Plaquettes"][0] and "élevé" not in by_label["Plaquettes"][1]
    assert "3.80 – 5.40" in by_label["Hematies"][1]
    ids = re.findall(r'name="document" value="(\d+)"', text)
    assert len(ids) == 1
    # the download needs the session's token
    refused = client.post("/hprim/telecharger", data={"csrf": "faux", "document": ids})
    assert refused.status_code == 403
    response = client.post("/hprim/telecharger", data={"csrf": session_csrf(client), "document": ids})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert "resultats-hprim.zip" in response.headers["content-disposition"]
    assert response.headers["content-security-policy"].startswith("sandbox")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["DUVERNOY.hpr"]
        assert archive.read("DUVERNOY.hpr") == SAMPLE.read_bytes()
    ref = store.open_folder(Actor.admin("test"), DOC, "INBOX")
    assert RETRIEVED_KEYWORD in store.message_summary(ref, uid).flags
    after = client.get("/hprim").text
    assert NO_NEW_TEXT.replace("'", "&#39;") in after and "récupéré le" in after
    assert "DUVERNOY Madeleine" in after  # still listed, after the new ones


def test_another_users_box_is_not_reachable(client: TestClient, store: Store, tmp_path: Path) -> None:
    deliver_result(store, tmp_path, to=OTHER)
    login(client)
    assert client.get("/hprim").text.count("DUVERNOY") == 0
    assert client.get(f"/hprim?boite={OTHER}").status_code == 404
    response = client.post("/hprim/telecharger", data={"csrf": session_csrf(client), "boite": OTHER,
                                                       "document": ["1"]})
    assert response.status_code == 404
