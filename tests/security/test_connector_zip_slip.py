"""Zip-slip against the XDM reader: an archive entry or a metadata URI that points out
of its folder must refuse the whole package before anything is used (an IHE_XDM.ZIP
arrives from any MSSanté sender)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.formats import ParseError, read_xdm
from connectors.formats.xdm import read_xdm_entries
from tests.unit.connectors.samples import make_zip, xdm_files

METADATA = "IHE_XDM/SUBSET01/METADATA.XML"


@pytest.mark.parametrize("name", ["../../etc/evil.txt", "/etc/evil.txt", "IHE_XDM\\..\\x",
                                  "C:/x.txt", "IHE_XDM/SUBSET01/../../../x", "a/./b"])
def test_entry_names_leaving_the_archive_are_refused(name: str):
    files = dict(xdm_files(), **{name: b"owned"})
    with pytest.raises(ParseError, match="leaves its folder"):
        read_xdm(make_zip(files))


@pytest.mark.parametrize("uri", ["../DOC0001.XML", "/etc/passwd", "..\\DOC0001.XML",
                                 "C:/DOC0001.XML", "SUB/../../x", "../../README.TXT"])
def test_uris_leaving_the_subset_folder_are_refused(uri: str):
    files = xdm_files()
    files[METADATA] = files[METADATA].replace(b"<rim:Value>DOC0001.XML</rim:Value>",
                                              f"<rim:Value>{uri}</rim:Value>".encode())
    with pytest.raises(ParseError, match="leaves its folder"):
        read_xdm_entries(files)


def test_a_folder_source_refuses_links(tmp_path: Path):
    root = tmp_path / "pkg"
    for name, data in xdm_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "IHE_XDM" / "SUBSET01" / "LINK.XML").symlink_to("/etc/hostname")
    with pytest.raises(ParseError, match="links refused"):
        read_xdm(root)
