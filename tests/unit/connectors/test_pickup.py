"""The pickup target's sans-IO parts: who a file is for, the name words, the message
it becomes, the deterministic Message-ID, which files are ready; and the recipient
lookup against a real directory store (RPPS, name, ambiguity refused)."""

from __future__ import annotations

import email
import email.policy
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.formats import parse_content
from connectors.pickup import (
    PickupFailure,
    RecipientHint,
    candidates,
    compose,
    message_id_for,
    name_words,
    recipient_hint,
    resolve_recipient,
)

SAMPLES = Path(__file__).parents[2] / "data" / "samples"


def with_line12(text: str) -> bytes:
    lines = (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes().split(b"\r\n")
    lines[11] = text.encode("latin-1")
    return b"\r\n".join(lines)


def test_recipient_hint_of_both_hprim_formats() -> None:
    assert recipient_hint(parse_content(with_line12("MED0815   DR LEBRETON ARNAUD"))) == \
        RecipientHint("MED0815", "DR LEBRETON ARNAUD")
    # an 11-digit RPPS written across the 10-character code column
    assert recipient_hint(parse_content(with_line12("10003456786 DR MARTIN JEAN"))) == \
        RecipientHint("10003456786", "DR MARTIN JEAN")
    sante = recipient_hint(parse_content((SAMPLES / "hps_01_simple.hps").read_bytes()))
    assert sante.code or sante.name
    with pytest.raises(PickupFailure):
        recipient_hint(parse_content((SAMPLES / "dlu_01_full.xml").read_bytes()))
    multi = parse_content((SAMPLES / "hprnet_02_multi.hpr").read_bytes())
    if len({(r.recipient.code, r.recipient.name) for r in multi.records}) > 1:
        with pytest.raises(PickupFailure):
            recipient_hint(multi)


def test_name_words_drop_titles() -> None:
    assert name_words("DR LEBRETON ARNAUD") == ["LEBRETON", "ARNAUD"]
    assert name_words("Docteur  Martin~Jean") == ["Martin", "Jean"]
    assert name_words("Pr. X") == ["X"]


@given(st.text(max_size=40), st.binary(max_size=300))
def test_compose_keeps_the_bytes_and_never_puts_the_name_in_the_subject(name: str, data: bytes) -> None:
    raw = compose("lab@a.example", "doc@a.example", "r.hpr", data, message_id_for("lab@a.example", "r.hpr", "0"))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    (part,) = [p for p in message.walk() if p.get_filename()]
    assert part.get_payload(decode=True) == data
    assert message["Subject"] == "Résultats d'analyses (HPRIM)"


def test_message_id_is_deterministic() -> None:
    one = message_id_for("lab@a.example", "r.hpr", "ab" * 32)
    assert one == message_id_for("lab@a.example", "r.hpr", "ab" * 32) and one.endswith("@a.example>")
    assert one != message_id_for("lab@a.example", "s.hpr", "ab" * 32)


def test_candidates_skip_hidden_partial_and_unsettled(tmp_path: Path) -> None:
    for name in ("a.hpr", ".b.hpr", "c.hpr.part", "d.tmp", "e.hpr"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sent").mkdir()
    old = time.time() - 60
    os.utime(tmp_path / "a.hpr", (old, old))
    assert [p.name for p in candidates(tmp_path, settle=10)] == ["a.hpr"]
    assert [p.name for p in candidates(tmp_path, settle=0)] == ["a.hpr", "e.hpr"]
    assert candidates(tmp_path / "missing", settle=0) == []


def test_resolve_recipient_in_the_directory(store) -> None:
    from directory import store as dstore
    from directory.identifiers import luhn_digit

    one = dstore.add_person(store, ident="10003456786", family_name="Martin", given_name="Jean")
    dstore.add_mailbox(store, address="jean.martin@a.example", bal_type="PER", person_id=one)
    for n, given_name in enumerate(("Paul", "Pierre")):
        body = f"100000000{n}"
        pid = dstore.add_person(store, ident=body + luhn_digit(body), family_name="Durand", given_name=given_name)
        dstore.add_mailbox(store, address=f"durand{n}@a.example", bal_type="PER", person_id=pid)
    assert resolve_recipient(store, RecipientHint("10003456786", "")) == "jean.martin@a.example"
    assert resolve_recipient(store, RecipientHint("MED0815", "DR MARTIN JEAN")) == "jean.martin@a.example"
    assert resolve_recipient(store, RecipientHint("", "dr.x@b.example")) == "dr.x@b.example"
    for hint in (RecipientHint("MED1", "DR DURAND"), RecipientHint("X", "DR LEBRETON ARNAUD"),
                 RecipientHint("", "")):
        with pytest.raises(PickupFailure):
            resolve_recipient(store, hint)
