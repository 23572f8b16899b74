"""Codes 903 / 904 / 905 decided by mss for a rule with `require_ins=true`
(connectors/formats/ins_check.py; the ANS volet's messageErrorCondition table): the
refusal goes back to the sender through the acknowledgement path, read with Python's
`email` package, and nothing is delivered; a document whose INS is complete and
consistent goes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.formats import parse_content
from connectors.formats.ins_check import refusal
from connectors.formats.summary import parts as content_parts
from mssmail.store.connectors import DELIVER_KIND
from tests.unit.connectors.samples import make_zip, xdm_files
from tests.unit.connectors.test_mdn import BOX, HPR, LAB, _acks, _mail, _report
from tests.unit.connectors.test_runtime import ADMIN, SAMPLES, _drain, _worker

CDA = (SAMPLES / "dlu_01_full.xml").read_bytes()
INS = b'extension="248022612345607"'
OTHER_INS = "131097512345667"  # dlu_02's: a valid INS-NIR of another patient


def _codes(data: bytes) -> list[tuple[int, str] | None]:
    result = parse_content(data)
    return [refusal(result, part) for part in content_parts(result)]


def _xdm(document_patient: str | None = None, cda: bytes | None = None) -> bytes:
    files = xdm_files()
    name = "IHE_XDM/SUBSET01/METADATA.XML"
    if document_patient:
        metadata = files[name].decode("utf-8")
        head, sep, rest = metadata.partition('value="248022612345607^^^')  # the document entry's
        files[name] = (head + sep.replace("248022612345607", document_patient) + rest).encode("utf-8")
    if cda is not None:
        files["IHE_XDM/SUBSET01/DOC0001.XML"] = cda
    return make_zip(files)


def test_refusal_codes_per_content() -> None:
    assert _codes(CDA) == [None]
    assert _codes(HPR)[0] is not None and {c and c[0] for c in _codes(HPR)} == {903}
    assert [c and c[0] for c in _codes(CDA.replace(INS, b'extension="248022612345608"'))] == [905]
    assert [c and c[0] for c in _codes(CDA.replace(INS, b'extension="2480226123456"'))] == [905]
    no_ins = CDA.replace(b'root="1.2.250.1.213.1.4.8"', b'root="1.2.3.4"')
    assert [c and c[0] for c in _codes(no_ins)] == [903]
    assert _codes(_xdm()) == [None]
    mismatch = _codes(_xdm(document_patient=OTHER_INS))
    assert [c and c[0] for c in mismatch] == [904] and "patientId" in mismatch[0][1]  # type: ignore[index]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _route(store, tmp_path: Path, attachment: tuple[str, bytes], require: str = "true") -> Path:
    store.create_mailbox(BOX)
    store.create_mailbox(LAB)
    folder = tmp_path / "dui"
    folder.mkdir()
    store.add_connector_rule(ADMIN, BOX, "folder", [str(folder)], options={"require_ins": require})
    store.deliver(_mail([attachment]), [BOX], sender=LAB)
    _drain(_worker(store, tmp_path))
    return folder


@pytest.mark.parametrize(("attachment", "code", "label"), [
    (("res.hpr", HPR), 903, "INS non présent dans le document"),
    (("cr.xml", CDA.replace(INS, b'extension="248022612345608"')), 905, "L'INS transmis n'est pas complet"),
    (("IHE_XDM.zip", _xdm(document_patient=OTHER_INS)), 904,
     "L'INS transmis ne correspond pas exactement à celui stocké dans la base du consommateur"),
])
def test_require_ins_refuses_with_the_volet_code_in_the_mdn(store, tmp_path: Path, attachment: tuple[str, bytes],
                                                           code: int, label: str) -> None:
    folder = _route(store, tmp_path, attachment)
    assert _files(folder) == [] and store.list_jobs(kind=DELIVER_KIND) == []
    (ack,) = _acks(store)
    assert ack["Subject"].startswith(f"[KO Intégration système !][{code}] ")
    report = _report(ack)
    assert report["Disposition"] == f"automatic-action/MDN-sent-automatically; processed/Error: {code}^{label}"
    assert report["Error"].startswith(f"{code}^{label}")


def test_require_ins_lets_a_qualified_ins_through_and_is_off_by_default(store, tmp_path: Path) -> None:
    folder = _route(store, tmp_path, ("cr.xml", CDA))
    assert len(_files(folder)) == 1
    (ack,) = _acks(store)
    assert _report(ack)["Disposition"] == "automatic-action/MDN-sent-automatically; processed"
    with pytest.raises(ValueError, match="require_ins"):
        store.add_connector_rule(ADMIN, BOX, "folder", [str(folder)], options={"require_ins": "yes"})


def test_without_require_ins_an_hprim_file_is_delivered(store, tmp_path: Path) -> None:
    folder = _route(store, tmp_path, ("res.hpr", HPR), require="false")
    assert len(_files(folder)) == 1
    (ack,) = _acks(store)
    assert _report(ack)["Error"] is None
