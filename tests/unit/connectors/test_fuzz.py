"""Fuzzing the four parsers: whatever the bytes, the only failure is ParseError; and the
work grows linearly with the input (counted in function calls and allocated memory,
never in wall time)."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import hl7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.formats import (
    Dlu,
    HprimNetFile,
    HprimSanteFile,
    ParseError,
    parse_cda_dlu,
    parse_content,
    parse_hprim_net,
    parse_hprim_sante,
)
from connectors.formats.fhir import bundle_from_cda, bundle_from_hprim_net, bundle_from_hprim_sante
from connectors.formats.hl7v2 import (
    Hl7Options,
    MailContext,
    mdm_from_cda,
    oru_r01_from_hprim_net,
    oru_r01_from_hprim_sante,
)
from connectors.formats.hprim_out import render_dlu, render_hprim_sante_patient, render_record
from connectors.formats.xdm import read_xdm, read_xdm_entries

from .samples import make_zip, sample_bytes, xdm_files

NET = [sample_bytes(n) for n in ("hprnet_01_abnormal.hpr", "hprnet_02_multi.hpr",
                                 "hprnet_03_cp1252.hpr")]
SANTE = [sample_bytes(n) for n in ("hps_01_simple.hps", "hps_02_multi.hps",
                                   "hps_03_latin1_continuation.hps")]
DLU = [sample_bytes(n) for n in ("dlu_01_full.xml", "dlu_02_minimal.xml")]
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def only_parse_errors(parse: Callable[[bytes], Any], data: bytes) -> None:
    try:
        result = parse(data)
    except ParseError as exc:
        assert exc.message and exc.kind
        assert exc.line is None or exc.line >= 1
        return
    result.to_dict()  # a result that was accepted must also serialise
    render_outputs(result)


OPTIONS = Hl7Options(control_id="1", timestamp="20260101000000")


def render_outputs(result: Any) -> None:
    """Whatever a parser accepted, every serialiser must render without an exception."""
    if isinstance(result, HprimNetFile):
        for record in result.records:
            hl7.parse(oru_r01_from_hprim_net(record, OPTIONS))
            bundle_from_hprim_net(record)
            render_record(record)
    elif isinstance(result, HprimSanteFile):
        for patient in result.patients:
            hl7.parse(oru_r01_from_hprim_sante(result, patient, OPTIONS))
            bundle_from_hprim_sante(result, patient)
            render_hprim_sante_patient(result, patient)
    elif isinstance(result, Dlu):
        render_dlu(result)
        bundle_from_cda(b"<x/>", result.header)
        mdm_from_cda(b"<x/>", result.header, MailContext(sender="a@b.example"), OPTIONS)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A sample with a few random edits: flips, deletions, insertions of delimiters and
    line ends, duplicated or dropped lines, truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup", "drop"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[position:position + draw(st.integers(1, 40))]
        elif action == "insert":
            data[position:position] = draw(st.sampled_from(
                [b"|", b"~", b"^", b"\\", b"&", b"\r\n", b"\r", b"\n", b"A|", b"OBX|",
                 b"****LAB****\r\n", b"****FIN****\r\n", b"<", b">", b"&amp;", b"\xff\xfe",
                 b"\xc3", b"\x00"]))
        elif action == "truncate":
            del data[position:]
        else:
            lines = bytes(data).split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            if action == "dup":
                lines.insert(index, lines[index])
            else:
                del lines[index]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_any_parser(data: bytes):
    for parse in (parse_hprim_net, parse_hprim_sante, parse_cda_dlu, read_xdm, parse_content):
        only_parse_errors(parse, data)
    only_parse_errors(lambda d: parse_hprim_sante(d, "literal_next"), data)


@FUZZ
@given(mutated(NET))
def test_mutated_hprim_net(data: bytes):
    only_parse_errors(parse_hprim_net, data)


@FUZZ
@given(mutated(SANTE), st.sampled_from(["hl7_named", "literal_next"]))
def test_mutated_hprim_sante(data: bytes, mode: str):
    only_parse_errors(lambda d: parse_hprim_sante(d, mode), data)


@FUZZ
@given(mutated(DLU))
def test_mutated_dlu(data: bytes):
    only_parse_errors(parse_cda_dlu, data)


@FUZZ
@given(mutated([xdm_files()["IHE_XDM/SUBSET01/METADATA.XML"]]))
def test_mutated_xdm_metadata(metadata: bytes):
    files = xdm_files()
    files["IHE_XDM/SUBSET01/METADATA.XML"] = metadata
    only_parse_errors(read_xdm_entries, files)


ARCHIVE = make_zip(xdm_files())


@FUZZ
@given(mutated([ARCHIVE]))
def test_mutated_xdm_archive(data: bytes):
    only_parse_errors(read_xdm, data)


# --- linear work ----------------------------------------------------------------------

def cost(parse: Callable[[bytes], Any], data: bytes) -> tuple[int, int]:
    """(function calls, peak traced memory) of one parse: deterministic for one input."""
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    tracemalloc.start()
    sys.setprofile(profile)
    try:
        parse(data)
    except ParseError:
        pass
    finally:
        sys.setprofile(None)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return calls, peak


def assert_linear(parse: Callable[[bytes], Any], small: bytes, large: bytes, factor: int) -> None:
    small_calls, small_peak = cost(parse, small)
    large_calls, large_peak = cost(parse, large)
    # Linear work: growing the input `factor` times may grow the work `factor` times plus
    # a constant share (imports, setup), never factor squared.
    assert large_calls <= factor * small_calls * 1.15 + 2000, (small_calls, large_calls)
    assert large_peak <= factor * small_peak * 1.3 + 200_000, (small_peak, large_peak)


SLOW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
line_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F,
                                           blacklist_characters="|~^\\&*"),
                    min_size=1, max_size=30)


@SLOW
@given(line_text, st.sampled_from(["records", "body", "lab", "long_line"]))
def test_hprim_net_work_is_linear(text: str, shape: str):
    header = "\r\n".join(["1", "NOM", "P", "A", "", "75001 PARIS", "01/01/1950",
                          "1500175123456", "R", "01/01/2026", "LAB       L", "MED       M"])

    def build(n: int) -> bytes:
        if shape == "records":
            body = (header + f"\r\n{text}\r\n****LAB****\r\nRES|{text}|C|N|1|u|0|2|H|F\r\n"
                    "****FIN****\r\n") * n
        elif shape == "body":
            body = header + "\r\n" + f"{text}\r\n" * n + "****FIN****\r\n"
        elif shape == "lab":
            body = (header + "\r\n****LAB****\r\n" + f"RES|{text}|C|N|1|u|0|2|L|F\r\n" * n
                    + "****FIN****\r\n")
        else:
            body = header + "\r\n" + text * n + "\r\n****FIN****\r\n"
        return (body + "****FINFICHIER****\r\n").encode("utf-8")

    assert_linear(parse_hprim_net, build(40), build(160), 4)


@SLOW
@given(line_text, st.sampled_from(["records", "continuations", "escapes", "comments"]))
def test_hprim_sante_work_is_linear(text: str, shape: str):
    head = "H|~^\\&|F||L~L||ORU|||M~M||P|H2.2~C|202601010000\r\nP|1|A|B||N~P\r\n"
    obr = "OBR|1|A|B|T~T~L\r\n"

    def build(n: int) -> bytes:
        if shape == "records":
            body = head + obr + f"OBX|1|NM|C~{text}~L||1|u|0-2|H|||F\r\n" * n
        elif shape == "continuations":
            body = head + "OBR|1|A|B|T~T~L" + f"\r\nA|^X~{text}~L" * n + "\r\n"
        elif shape == "escapes":
            body = head + obr + "OBX|1|TX|C~C~L||" + f"{text}\\.br\\\\F\\" * n + "\r\n"
        else:
            body = head + obr + "OBX|1|NM|C~C~L||1\r\n" + f"C|1|L|{text}|G\r\n" * n
        return (body + "L|1\r\n").encode("utf-8")

    assert_linear(parse_hprim_sante, build(40), build(160), 4)
    assert_linear(lambda d: parse_hprim_sante(d, "literal_next"), build(40), build(160), 4)


@SLOW
@given(line_text.filter(lambda t: "<" not in t and "&" not in t), st.sampled_from(["items", "rows"]))
def test_dlu_work_is_linear(text: str, shape: str):
    seed = DLU[0]
    marker = b"<item>Risque de chute"
    escaped = text.replace(">", "&gt;").encode("utf-8")

    def build(n: int) -> bytes:
        if shape == "items":
            return seed.replace(marker, b"<item>" + escaped + b"</item>" * 1 * 0
                                + (b"<item>" + escaped + b"</item>") * n + marker, 1)
        row = b"<tr><td>" + escaped + b"</td><td>x</td><td>y</td></tr>"
        return seed.replace(b"<tbody>", b"<tbody>" + row * n, 1)

    assert_linear(parse_cda_dlu, build(40), build(160), 4)
