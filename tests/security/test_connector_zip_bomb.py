"""Zip bombs and oversized archives against the XDM reader: refused from the central
directory, before decompression, and never trusting the declared sizes alone."""

from __future__ import annotations

import zipfile

import pytest

from connectors.formats import ParseError, XdmLimits, read_xdm
from tests.unit.connectors.samples import make_zip, xdm_files


def test_compression_ratio_bomb_is_refused():
    files = dict(xdm_files(), **{"IHE_XDM/SUBSET01/BOMB.BIN": b"\0" * (20 * 1024 * 1024)})
    with pytest.raises(ParseError, match="zip bomb"):
        read_xdm(make_zip(files))
    # The same bytes stored: the ratio, not the size, was the problem.
    assert read_xdm(make_zip(files, zipfile.ZIP_STORED)).submission_sets


def test_entry_count_and_total_size_are_bounded():
    files = xdm_files()
    many = dict(files, **{f"extra/{i}.txt": b"x" for i in range(1001)})
    with pytest.raises(ParseError, match="entries, at most 1000"):
        read_xdm(make_zip(many))
    with pytest.raises(ParseError, match="uncompressed, at most"):
        read_xdm(make_zip(files), XdmLimits(max_total_bytes=1000))


def test_encrypted_and_corrupt_archives_are_refused():
    archive = bytearray(make_zip(xdm_files()))
    header = archive.index(b"PK\x01\x02")  # first central directory entry
    archive[header + 8] |= 0x1  # general purpose flag: encrypted
    with pytest.raises(ParseError, match="encrypted"):
        read_xdm(bytes(archive))
    with pytest.raises(ParseError, match="not a readable ZIP"):
        read_xdm(b"PK\x03\x04" + b"\xff" * 100)
