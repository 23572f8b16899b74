"""What an SMTP worker process tells the parent of a blob it stored (mssmail/smtp/
gateway.py): the summary survives the JSON both ways, and the parent refuses a field of
the wrong type (the worker speaks for hostile input)."""

from __future__ import annotations

import json

import pytest

from mssmail.smtp.gateway import stored_from_json, stored_to_json
from mssmail.store.summary import summarize

SHA = "ab" * 32
HPRIM_BODY = (b"From: lab@b.example\r\nTo: doc@a.example\r\nSubject: Resultats\r\n"
              b"Date: Thu, 12 Mar 2026 10:00:00 +0100\r\nMessage-ID: <r@b.example>\r\n\r\n"
              b"0004512\r\nDUVERNOY\r\n****LAB****\r\nRES|Hematies|HEM|N|3.52|T/L\r\n****FIN****\r\n")


@pytest.mark.parametrize("raw", [HPRIM_BODY, HPRIM_BODY.replace(b"****LAB****", b"texte")])
def test_the_summary_crosses_intact(raw: bytes) -> None:
    summary = summarize(raw)
    assert summary.hprim_body == (b"****LAB****" in raw)
    over_the_pipe = json.loads(json.dumps(stored_to_json((SHA, summary))))
    assert stored_from_json(over_the_pipe) == (SHA, summary)


def test_a_missing_hint_reads_false_and_a_bad_type_is_refused() -> None:
    value = stored_to_json((SHA, summarize(HPRIM_BODY)))
    older = {k: v for k, v in value.items() if k != "hprim_body"}
    assert stored_from_json(older)[1].hprim_body is False  # type: ignore[index]
    with pytest.raises(ValueError):
        stored_from_json({**value, "hprim_body": "yes"})
