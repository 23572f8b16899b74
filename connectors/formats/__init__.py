"""Sans-IO parsers and serialisers for the connector formats (HPRIM Net, HPRIM Santé,
CDA DLU, IHE XDM -> HL7 v2, FHIR R4, HPRIM Net). No module here does I/O (except
reading an unzipped XDM directory when given one), logs, or keeps state between calls.
"""

from .cda_dlu import Dlu, parse_cda_dlu, parse_cda_header
from .detect import detect_kind, parse_content
from .errors import ParseError
from .hprim_net import HprimNetFile, HprimNetReader, parse_hprim_net
from .hprim_sante import HprimSanteFile, HprimSanteReader, parse_hprim_sante
from .xdm import XdmLimits, XdmPackage, read_xdm

__all__ = ["Dlu", "HprimNetFile", "HprimNetReader", "HprimSanteFile", "HprimSanteReader", "ParseError", "XdmLimits", "XdmPackage",
           "detect_kind", "parse_cda_dlu", "parse_cda_header", "parse_content",
           "parse_hprim_net", "parse_hprim_sante", "read_xdm"]
