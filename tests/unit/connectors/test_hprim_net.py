"""HPRIM Net parser: structure, flags, tolerances and refusals."""

from __future__ import annotations

import pytest

from connectors.formats import ParseError, parse_hprim_net
from connectors.formats.hprim_net import parse_date

from .samples import sample_bytes

HEADER = ["0001", "NOM", "PRENOM", "1 RUE", "", "75001 PARIS", "01/02/1950",
          "1500275123456 ", "REQ1", "12/03/2026", "LAB1      LABO", "MED1      DR X"]


def record(*lab: str, body: tuple[str, ...] = ("texte",), lab_block: bool = True) -> list[str]:
    lines = [*HEADER, *body]
    if lab_block:
        lines += ["****LAB****", *lab]
    return [*lines, "****FIN****"]


def encode(lines: list[str], end: str = "\r\n") -> bytes:
    return end.join(lines).encode("cp1252") + end.encode()


def test_sample_lines_and_values_are_exact():
    parsed = parse_hprim_net(sample_bytes("hprnet_01_abnormal.hpr"))
    (rec,) = parsed.records
    assert rec.results[1].value2 == "6.27" and rec.results[1].line == 30
    assert rec.abnormal_count == 6 and parsed.warnings == ()
    assert rec.sender.code == "LAB0042" and rec.recipient.name == "DR LEBRETON ARNAUD"


def test_res_is_padded_to_fourteen_fields_and_flags_interpreted():
    data = encode([*record("RES|Glucose|GLU|N|<2|g/L|0,70|1,10|<|F",
                           "RES|K|K|N|9,9|mmol/L|3,5|5|>",
                           "RES|X|X|N|1||||ZZ|F",
                           "RES|Y|Y|N|1||||AA|F|||||extra"), "****FINFICHIER****"])
    parsed = parse_hprim_net(data)
    low, high, odd, critical = parsed.records[0].results
    assert (low.value, low.abnormal, low.off_scale) == ("<2", None, "low")
    assert (high.abnormal, high.off_scale, high.status, high.high2) == (None, "high", "", "")
    assert odd.abnormal is False and odd.off_scale is None
    assert critical.abnormal is True
    assert any("unknown flag 'ZZ'" in w for w in parsed.warnings)
    assert "off_scale" in low.to_dict() and "off_scale" not in critical.to_dict()


def test_lf_and_cr_line_ends_give_the_same_lines():
    lines = record("TEX|titre", "RES|A|A|N|1|u|0|2|N|F")
    by_crlf = parse_hprim_net(encode(lines)).records[0]
    for end in ("\n", "\r"):
        other = parse_hprim_net(encode(lines, end)).records[0]
        assert other == by_crlf


def test_missing_finfichier_and_unclosed_last_record_are_warnings():
    parsed = parse_hprim_net(encode([*HEADER, "just text"]))
    assert not parsed.has_finfichier and parsed.records[0].body_text == "just text"
    assert any("FINFICHIER" in w for w in parsed.warnings)
    assert any("not closed by ****FIN****" in w for w in parsed.warnings)


def test_record_without_lab_block_is_accepted():
    parsed = parse_hprim_net(encode([*record(lab_block=False), "****FINFICHIER****"]))
    (rec,) = parsed.records
    assert rec.results == () and rec.has_lab is False and rec.body_text == "texte"


def test_nir_warnings():
    bad_key = list(HEADER)
    bad_key[7] = "1500275123456 00"
    parsed = parse_hprim_net(encode([*bad_key, "****FIN****", "****FINFICHIER****"]))
    assert any("key 00 does not match" in w for w in parsed.warnings)
    wrong_month = list(HEADER)
    wrong_month[7] = "1500375123456"
    parsed = parse_hprim_net(encode([*wrong_month, "****FIN****", "****FINFICHIER****"]))
    assert any("NIR month 03 is not the birth month 02" in w for w in parsed.warnings)


def test_refusals_name_the_line():
    with pytest.raises(ParseError) as info:
        parse_hprim_net(encode(HEADER[:5]))
    assert info.value.line == 1 and "5 of 12" in info.value.message
    with pytest.raises(ParseError) as info:
        parse_hprim_net(encode([*HEADER[:8], "****LAB****"]))
    assert info.value.line == 9 and "header line 9" in str(info.value)
    with pytest.raises(ParseError) as info:
        parse_hprim_net(encode([*HEADER, "x", "****LAB****", "RES|A|A", "****FINFICHIER****"]))
    assert info.value.line == 14 and "not closed" in info.value.message
    with pytest.raises(ParseError):
        parse_hprim_net(b"")
    with pytest.raises(ParseError):
        parse_hprim_net(b"\r\n\r\n")


def test_dates():
    assert parse_date("14/02/1948") == "1948-02-14"
    assert parse_date("14/02/1948 08:15") == "1948-02-14"
    assert parse_date("1948-02-14") == "1948-02-14"
    assert parse_date("14021948") == "1948-02-14"
    assert parse_date("31/02/1948") is None and parse_date("") is None


def test_reader_streams_the_records_parse_returns():
    from connectors.formats import HprimNetReader

    data = sample_bytes("hprnet_02_multi.hpr")
    reader = HprimNetReader(data)
    streamed = list(reader.records())
    assert tuple(streamed) == parse_hprim_net(data).records and reader.has_finfichier
    # A refusal after the first record: the first one was already yielded.
    broken = data.split(b"****FIN****")
    reader = HprimNetReader(b"****FIN****".join(broken[:2]))
    records = reader.records()
    assert next(records).patient.last_name == "KERGUELEN"
    with pytest.raises(ParseError, match="not closed"):
        next(records)


@pytest.mark.parametrize("size", [1, 5, 64, 700])
def test_records_cut_across_text_blocks_are_the_same(monkeypatch: pytest.MonkeyPatch, size: int):
    # The reader takes the body and the LAB block as runs found in a decoded block: a run
    # cut by a block end goes on in the next one (the bench's blocks are 1 MB: cut them
    # small here so that every construct meets a block end somewhere).
    from connectors.formats import HprimNetReader, hprim_net

    lines = [*record("TEX|titre", "RES| A |A|N|1|u|0|2|N|F ", "RES|B|B|N|2|u|0|2|H|F", "junk",
                     body=("texte", "x****y", "", "fin du texte")),
             *record(lab_block=False), "", "****FINFICHIER****"]
    for data in (encode(lines), encode(lines, "\n"), encode(lines)[:-2],
                 sample_bytes("hprnet_02_multi.hpr"), sample_bytes("hprnet_03_cp1252.hpr")):
        whole = parse_hprim_net(data)
        monkeypatch.setattr(hprim_net, "BLOCK_SIZE", size)
        reader = HprimNetReader(data)
        assert tuple(reader.records()) == whole.records
        assert tuple(reader.warnings) == whole.warnings
        monkeypatch.undo()
