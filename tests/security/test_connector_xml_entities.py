"""XXE and entity expansion against the CDA and XDM metadata parsers: no DTD is ever
loaded, no entity resolved, no network touched; a DOCTYPE refuses the document."""

from __future__ import annotations

import pytest

from connectors.formats import ParseError, parse_cda_dlu
from connectors.formats.xdm import read_xdm_entries
from tests.unit.connectors.samples import xdm_files

XXE = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
       b'<ClinicalDocument xmlns="urn:hl7-org:v3">&e;</ClinicalDocument>')
REMOTE_DTD = (b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd">'
              b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>')
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
          b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
          b'<ClinicalDocument xmlns="urn:hl7-org:v3">&c;</ClinicalDocument>')


@pytest.mark.parametrize("document", [XXE, REMOTE_DTD, LAUGHS])
def test_cda_with_a_doctype_is_refused(document: bytes):
    with pytest.raises(ParseError) as info:
        parse_cda_dlu(document)
    assert "passwd" not in str(info.value) and "root:" not in str(info.value)


@pytest.mark.parametrize("document", [XXE, LAUGHS])
def test_metadata_with_a_doctype_is_refused(document: bytes):
    files = xdm_files()
    files["IHE_XDM/SUBSET01/METADATA.XML"] = document.replace(
        b"ClinicalDocument", b"SubmitObjectsRequest")
    with pytest.raises(ParseError, match=r"DOCTYPE|not well-formed"):
        read_xdm_entries(files)
