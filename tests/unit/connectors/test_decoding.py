"""Charset choice, line ends and NIR keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connectors.formats.decoding import decode_text, detect_layout, iter_lines, iter_raw_lines
from connectors.formats.nir import nir_birth_month, nir_key, nir_key_is_valid


def test_bom_is_stripped_and_utf8_wins_when_valid():
    data = b"\xef\xbb\xbfL\xc3\x89A\r\n"
    layout = detect_layout(data)
    assert layout.encoding == "utf-8" and layout.start == 3
    assert list(iter_lines(data)) == [(1, "LÉA")]


def test_invalid_utf8_is_cp1252_even_for_undefined_bytes():
    data = "Œuf – été".encode("cp1252") + b" \x81"
    assert detect_layout(data).encoding == "cp1252"
    assert decode_text(data) == "Œuf – été \x81"
    assert detect_layout("é".encode("latin-1")).encoding == "iso-8859-1"
    assert detect_layout(b"ascii only").encoding == "iso-8859-1"


def test_line_ends_crlf_lf_cr_and_mixed():
    assert list(iter_raw_lines(b"a\r\nb\r\n")) == [b"a", b"b"]
    assert list(iter_raw_lines(b"a\nb")) == [b"a", b"b"]
    assert list(iter_raw_lines(b"a\rb\r")) == [b"a", b"b"]
    assert list(iter_raw_lines(b"a\r\nb\nc\rd")) == [b"a", b"b", b"c", b"d"]
    assert list(iter_raw_lines(b"a\r\n\r\nb")) == [b"a", b"", b"b"]
    # Form feed, vertical tab and NEL are content, not line ends (unlike str.splitlines).
    assert list(iter_raw_lines(b"a\x0cb\x0bc\x85d\n")) == [b"a\x0cb\x0bc\x85d"]
    assert detect_layout(b"a\r\nb\r\n").line_ending == "CRLF"
    assert detect_layout(b"a\nb\r").line_ending == "mixed"
    assert detect_layout(b"a\rb").line_ending == "CR"
    assert detect_layout(b"ab").line_ending == "none"


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                               blacklist_categories=["Cs"])), min_size=1),
       st.sampled_from(["\r\n", "\n", "\r"]))
def test_lines_round_trip_through_any_line_end(lines: list[str], end: str):
    data = end.join(lines).encode("utf-8")
    decoded = [text for _, text in iter_lines(data)]
    expected = list(lines)
    if expected and expected[-1] == "":
        expected.pop()  # a final line end does not open an empty last line
    assert decoded == expected


def test_nir_keys():
    assert nir_key("2480226123456") == 7
    assert nir_key_is_valid("2480226123456", "07")
    assert not nir_key_is_valid("2480226123456", "08")
    # Corsica: 2A counts as 19, 2B as 18 before the modulo.
    assert nir_key("185022A123456") == 97 - int("1850219123456") % 97
    assert nir_key("185022B123456") == 97 - int("1850218123456") % 97
    assert nir_key("not a nir") is None
    assert nir_birth_month("2480226123456") == 2
    assert nir_birth_month("2489926123456") is None


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                               blacklist_categories=["Cs"]), max_size=8),
                min_size=1, max_size=12),
       st.lists(st.sampled_from(["\r\n", "\n", "\r"]), min_size=1, max_size=12),
       st.integers(1, 9), st.sampled_from(["utf-8", "cp1252"]))
def test_blocks_cut_anywhere_give_the_same_lines(lines: list[str], ends: list[str], size: int,
                                                 charset: str):
    from connectors.formats.decoding import iter_line_blocks

    text = "".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    data = text.encode(charset, errors="replace")
    whole = list(iter_lines(data))
    numbered = [(first + i, line) for first, block in iter_line_blocks(data, block_size=size)
                for i, line in enumerate(block)]
    assert numbered == whole
    layout = detect_layout(data)
    # The block path agrees with the line-at-a-time reference (split bytes, decode each).
    assert [line for _, line in whole] == [layout.decode(raw) for raw in iter_raw_lines(data)]


def test_text_blocks_end_every_line_with_one_lf():
    from connectors.formats.decoding import iter_text_blocks

    assert list(iter_text_blocks(b"a\r\nb\r\nc", block_size=1)) == [(1, "a\n"), (2, "b\n"),
                                                                      (3, "c\n")]
    assert list(iter_text_blocks(b"a\rb\n\n")) == [(1, "a\nb\n\n")]
    # keep_crlf: a CRLF-only file's lines keep their CRLF, the last one included.
    assert list(iter_text_blocks(b"a\r\nb", keep_crlf=True)) == [(1, "a\r\nb\r\n")]
    assert list(iter_text_blocks(b"a\r\nb\n", keep_crlf=True)) == [(1, "a\nb\n")]


def test_the_collector_comes_back_as_it_was_after_a_whole_parse() -> None:
    """parse_hprim_* hold the cyclic collector off while they build (collector_paused):
    it must come back on after a parse, after a failed parse and after nested pauses,
    and stay off in a process that had turned it off."""
    import gc

    import pytest

    from connectors.formats import ParseError, parse_hprim_net
    from connectors.formats.decoding import collector_paused
    from tests.unit.connectors.samples import sample_bytes

    assert gc.isenabled()
    parse_hprim_net(sample_bytes("hprnet_01_abnormal.hpr"))
    assert gc.isenabled()
    with pytest.raises(ParseError):
        parse_hprim_net(b"MSH|^~\\&|LAB\r")
    assert gc.isenabled()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
