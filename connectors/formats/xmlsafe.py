"""One hardened lxml parser for the XML that arrives by mail (CDA, XDM metadata).

An attacker controls these bytes, so: no DTD loaded, no entity resolved (no XXE, no
"billion laughs"), no network access, no huge-tree mode (lxml's default depth and
text-size limits stay on), and a document that declares a DOCTYPE is refused outright:
neither CDA R2 nor ebRS 3.0 uses one.
"""

from __future__ import annotations

from lxml import etree

from .errors import ParseError


def parse_xml(data: bytes, kind: str, what: str) -> etree._Element:
    """The root element of ``data``, or ParseError naming ``what`` and the line."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        raise ParseError(kind, line, what, f"not well-formed XML: {exc.msg}") from None
    except ValueError as exc:  # e.g. a str with an encoding declaration
        raise ParseError(kind, None, what, f"unreadable XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ParseError(kind, 1, what, "a DOCTYPE declaration is not allowed")
    return root
