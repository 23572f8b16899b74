"""What kind of connector content a file is, and one entry point to parse any of them.

Detection looks at the bytes, not the name (a lab's ``.txt`` may be HPRIM Net or
HPRIM Santé; ``IHE_XDM.ZIP`` arrives under many names):

- ZIP local-file signature ``PK\\x03\\x04`` (or an empty archive ``PK\\x05\\x06``): XDM;
- ``<`` first (after a BOM and blanks): XML, read as CDA (DLU);
- ``MSH`` + a separator: an HL7 v2 message (no parser here: refused with that name);
- ``H`` + 5 punctuation delimiters + the field separator again: HPRIM Santé;
- anything else is tried as HPRIM Net, whose parser refuses what is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cda_dlu import parse_cda_dlu
from .decoding import UTF8_BOM
from .errors import ParseError
from .hprim_net import parse_hprim_net
from .hprim_sante import parse_hprim_sante
from .xdm import XdmLimits, read_xdm

KINDS = ("hprim-net", "hprim-sante", "dlu", "xdm")
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def detect_kind(data: bytes) -> str:
    """One of ``hprim-net``, ``hprim-sante``, ``dlu``, ``xdm``, ``hl7v2``."""
    if data.startswith(ZIP_SIGNATURES):
        return "xdm"
    head = data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
    head = head[:4096].lstrip(b" \t\r\n\x00\x0b\x0c\x1c")
    if head.startswith(b"<"):
        return "dlu"
    if head.startswith(b"MSH") and len(head) > 3 and not chr(head[3]).isalnum():
        return "hl7v2"
    if len(head) >= 7 and head[:1] == b"H":
        delimiters = head[1:6]
        if (all(not chr(b).isalnum() and not chr(b).isspace() for b in delimiters)
                and head[6:7] == head[1:2]):
            return "hprim-sante"
    return "hprim-net"


def parse_content(source: bytes | Path, kind: str = "auto", *,
                  escape_mode: str = "hl7_named", limits: XdmLimits | None = None) -> Any:
    """Parse ``source`` (bytes, or a directory for an unzipped XDM) as ``kind``.

    Returns the parser's frozen result (``HprimNetFile``, ``HprimSanteFile``, ``Dlu``,
    ``XdmPackage``); raises ParseError for refused input.
    """
    if isinstance(source, Path):
        return read_xdm(source, limits)
    if kind == "auto":
        kind = detect_kind(source)
    if kind == "hl7v2":
        raise ParseError("hl7v2", 1, "MSH", "HL7 v2 message (MSH segment), not an HPRIM file")
    if kind == "hprim-net":
        return parse_hprim_net(source)
    if kind == "hprim-sante":
        return parse_hprim_sante(source, escape_mode)
    if kind == "dlu":
        return parse_cda_dlu(source)
    if kind == "xdm":
        return read_xdm(source, limits)
    raise ValueError(f"unknown content kind {kind!r} (one of auto, {', '.join(KINDS)})")
