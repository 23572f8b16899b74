"""Routing on X-MSS-CODECDA (issue 13 part 4; MSSanté DST ECO.2.4.1): the header's
comma-separated document type codes, a `codecda=` condition, and a real route on a
store: a DLU in an IHE_XDM archive whose mail says `X-MSS-CODECDA: 34112-3,74207-2`
goes to the rule that names one of them; the same archive without the header does not."""

from __future__ import annotations

import io
import types
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors import routing
from connectors.worker import ConnectorWorker
from mssmail.store.actors import Actor

SAMPLES = Path(__file__).parents[2] / "data" / "samples"
BOX = "dui@a.example"


def test_codecda_values_and_match() -> None:
    headers = (("Subject", "x"), ("X-MSS-CODECDA", " 34112-3, PRESC-BIO ,"), ("x-mss-codecda", "15508-5"))
    assert routing.codecda_values(headers) == frozenset({"34112-3", "presc-bio", "15508-5"})
    assert routing.codecda_values((("Subject", "x"),)) == frozenset()
    assert routing.parse_match("codecda=PRESC-BIO") == {"codecda": "presc-bio"}
    rule = {"codecda": "presc-bio"}
    assert routing.matches(rule, kind="cda:11502-2", container="xdm", sender="",
                           codecda=frozenset({"34112-3", "presc-bio"}))
    assert not routing.matches(rule, kind="cda:11502-2", container="xdm", sender="", codecda=frozenset())
    assert not routing.matches(rule, kind="cda:11502-2", container="xdm", sender="",
                               codecda=frozenset({"34112-3"}))


def _zip_of_xdm() -> bytes:
    buffer = io.BytesIO()
    root = SAMPLES / "xdm"
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


@pytest.mark.parametrize("header", ["34112-3,74207-2", None])
def test_a_rule_on_codecda_routes_only_mail_that_says_so(store, tmp_path: Path, header: str | None) -> None:
    store.create_mailbox(BOX, "applicative")
    target = tmp_path / "lps"
    target.mkdir()
    store.add_connector_rule(Actor.admin("t"), BOX, "folder", [str(target)], match={"codecda": "74207-2"})
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "ehpad@b.example", BOX, "DLU", "<x@b.example>"
    if header is not None:
        msg["X-MSS-CODECDA"] = header
    msg.set_content("DLU ci-joint.")
    msg.add_attachment(_zip_of_xdm(), maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    store.deliver(msg.as_bytes(), [BOX], sender="ehpad@b.example")
    settings = types.SimpleNamespace(poll_interval=1, lease=60, retry_initial=30, retry_max_interval=3600,
                                     max_age=3600, max_attempts=3, mllp_timeout=2)
    worker = ConnectorWorker(types.SimpleNamespace(connectors=settings,
                                                   server=types.SimpleNamespace(data=str(tmp_path))), store)
    while worker.run_once():
        pass
    delivered = [p for p in target.iterdir() if p.is_file()]
    assert len(delivered) == (1 if header else 0)
