"""XDM reader: layout, checks and the archive bounds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from connectors.formats import ParseError, XdmLimits, read_xdm
from connectors.formats.xdm import read_xdm_entries, recipient_email, split_patient_id

from .samples import XDM_DIR, make_zip, xdm_files

METADATA = "IHE_XDM/SUBSET01/METADATA.XML"
DOCUMENT = "IHE_XDM/SUBSET01/DOC0001.XML"


def test_names_are_matched_case_insensitively():
    files = {name.lower(): data for name, data in xdm_files().items()}
    package = read_xdm(make_zip(files))
    (subset,) = package.submission_sets
    assert subset.documents[0].path == DOCUMENT.lower()
    assert subset.documents[0].content.header.patient.family == "MARCHAL"


def test_patient_id_with_and_without_nh():
    with_nh = "248022612345607^^^&1.2.250.1.213.1.4.8&ISO^NH"
    assert split_patient_id(with_nh) == ("248022612345607", "1.2.250.1.213.1.4.8")
    assert split_patient_id(with_nh[:-3]) == ("248022612345607", "1.2.250.1.213.1.4.8")
    assert split_patient_id("EHP-1^^^&2.25.1&ISO") == (None, None)
    files = xdm_files()
    files[METADATA] = files[METADATA].replace(b"&amp;ISO^NH", b"&amp;ISO")
    package = read_xdm_entries(files)
    assert package.submission_sets[0].ins == "248022612345607"
    assert recipient_email("||^^Internet^a@b.example") == "a@b.example"
    assert recipient_email("Service X^^^^^^^^^123") is None


def test_unique_id_mismatch_is_a_warning():
    files = xdm_files()
    files[METADATA] = files[METADATA].replace(b"^DLU-2026-000118", b"^OTHER")
    package = read_xdm_entries(files)
    assert any("is not the CDA id" in w for w in package.warnings)


def test_size_mismatch_missing_document_and_missing_metadata_are_refused():
    files = xdm_files()
    files[METADATA] = files[METADATA].replace(b"<rim:Value>9084</rim:Value>",
                                              b"<rim:Value>9085</rim:Value>")
    with pytest.raises(ParseError, match="metadata says 9085"):
        read_xdm_entries(files)
    files = xdm_files()
    del files[DOCUMENT]
    with pytest.raises(ParseError, match="is not in IHE_XDM/SUBSET01/"):
        read_xdm_entries(files)
    files = xdm_files()
    del files[METADATA]
    with pytest.raises(ParseError, match=r"no IHE_XDM/SUBSETnn/METADATA\.XML"):
        read_xdm_entries(files)


def test_archive_bounds():
    files = xdm_files()
    many = dict(files, **{f"extra/{i}.txt": b"x" for i in range(20)})
    with pytest.raises(ParseError, match="entries, at most 10"):
        read_xdm(make_zip(many), XdmLimits(max_entries=10))
    with pytest.raises(ParseError, match="uncompressed, at most"):
        read_xdm(make_zip(files), XdmLimits(max_total_bytes=1000))
    ratio = dict(files, **{"IHE_XDM/SUBSET01/Z.BIN": b"\0" * 200_000})
    with pytest.raises(ParseError, match="zip bomb"):
        read_xdm(make_zip(ratio))
    # The same bytes stored uncompressed are fine: the ratio, not the size, is bounded.
    assert read_xdm(make_zip(ratio, zipfile.ZIP_STORED)).submission_sets
    with pytest.raises(ParseError, match="not a readable ZIP"):
        read_xdm(b"PK\x03\x04garbage")
    with pytest.raises(ParseError, match="differ only by case"):
        read_xdm_entries(dict(files, **{"readme.txt": b"x"}))


def test_directory_source_refuses_links(tmp_path: Path):
    root = tmp_path / "pkg"
    for name, data in xdm_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    assert read_xdm(root).submission_sets[0].documents[0].size == 9084
    (root / "IHE_XDM" / "SUBSET01" / "LINK.XML").symlink_to("/etc/hostname")
    with pytest.raises(ParseError, match="links refused"):
        read_xdm(root)
    assert read_xdm(XDM_DIR).root_files == ("INDEX.HTM", "README.TXT")
