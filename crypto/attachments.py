"""Per-attachment signatures: a detached `<name>.p7s` part beside each attachment.

Each signature covers the attachment's decoded bytes (the document itself), so that a
receiving program can check one document alone, e.g.
`openssl cms -verify -binary -inform DER -in doc.pdf.p7s -content doc.pdf`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crypto import report as rep
from crypto import smime
from crypto.keystore import Credential
from mssmail import mime

P7S_TYPE = "application/pkcs7-signature"
ASC_TYPE = "application/pgp-signature"


@dataclass
class Leaf:
    raw: bytes
    headers: bytes
    body: bytes
    filename: str | None
    content_type: str


def _leaf(raw: bytes) -> Leaf:
    headers, body = mime.split_entity(raw)
    msg = mime.parse_headers(headers)
    name = msg.filename()
    return Leaf(raw, headers, body, name or None, msg.content_type())


def _children(entity: bytes) -> tuple[str, list[bytes]] | None:
    headers, body = mime.split_entity(entity)
    msg = mime.parse_headers(headers)
    if not msg.content_type().startswith("multipart/") or msg.content_type() == "multipart/signed":
        return None
    boundary = msg.boundary()
    return (boundary, mime.multipart_parts(body, boundary)) if boundary else None


def _rebuild(entity: bytes, boundary: str, parts: list[bytes]) -> bytes:
    headers, body = mime.split_entity(entity)
    delim = f"--{boundary}".encode()
    first = body.find(delim)
    preamble = body[:first] if first > 0 else b""
    out = headers + b"\r\n" + preamble
    for part in parts:
        out += delim + b"\r\n" + part + b"\r\n"
    return out + delim + b"--\r\n"


def protect(entity: bytes, cred: Credential) -> bytes:
    """The entity with a `<name>.p7s` detached S/MIME signature after every attachment."""
    return _protect(entity, lambda data: smime.sign_bytes(data, cred, detached=True), ".p7s", P7S_TYPE)


def protect_pgp(entity: bytes, pgp: Any, address: str) -> bytes:
    """The same with `<name>.asc` detached OpenPGP signatures (RFC 4880 11.4)."""
    return _protect(entity, lambda data: pgp.sign_bytes(data, address), ".asc", ASC_TYPE)


def _protect(entity: bytes, sign: Callable[[bytes], bytes], suffix: str, ctype: str) -> bytes:
    entity = mime.canonical(entity)
    found = _children(entity)
    if found is None:
        return entity
    boundary, parts = found
    out: list[bytes] = []
    names = {_leaf(p).filename for p in parts}
    for part in parts:
        if _children(part) is not None:
            out.append(_protect(part, sign, suffix, ctype))
            continue
        out.append(part)
        leaf = _leaf(part)
        if not leaf.filename or leaf.content_type in (P7S_TYPE, ASC_TYPE) or f"{leaf.filename}{suffix}" in names:
            continue
        signature = sign(mime.decode_body(leaf.headers, leaf.body))
        sig_name = f"{leaf.filename}{suffix}".replace('"', "")
        out.append((f'Content-Type: {ctype}; name="{sig_name}"\r\n'
                    "Content-Transfer-Encoding: base64\r\n"
                    f'Content-Disposition: attachment; filename="{sig_name}"\r\n\r\n').encode()
                   + mime.b64_lines(signature).rstrip(b"\r\n"))
    return _rebuild(entity, boundary, out)


def verify(entity: bytes, trust: smime.Trust,
           pgp: Any = None) -> tuple[list[rep.PartReport], list[rep.SignerReport]]:
    """One PartReport per attachment (intact / tampered / unsigned) and the signers."""
    found = _children(mime.canonical(entity))
    if found is None:
        return [], []
    parts_out: list[rep.PartReport] = []
    signers: list[rep.SignerReport] = []
    leaves = []
    for raw in found[1]:
        if _children(raw) is not None:
            p, s = verify(raw, trust, pgp)
            parts_out += p
            signers += s
        else:
            leaves.append(_leaf(raw))
    by_name = {leaf.filename: leaf for leaf in leaves if leaf.filename}
    for leaf in leaves:
        if not leaf.filename or (leaf.filename[-4:] in (".p7s", ".asc") and leaf.filename[:-4] in by_name):
            continue
        sig = by_name.get(f"{leaf.filename}.p7s")
        asc = by_name.get(f"{leaf.filename}.asc")
        if sig is None and asc is not None and pgp is not None:
            these = [pgp.verify_detached(mime.decode_body(leaf.headers, leaf.body),
                                         mime.decode_body(asc.headers, asc.body), [leaf.filename])]
            signers += these
            parts_out.append(rep.PartReport(leaf.filename, "attachment", _part_status(these),
                                            signed_by=these[0].subject or None, signature_part=asc.filename))
            continue
        if sig is None:
            parts_out.append(rep.PartReport(leaf.filename, "attachment", rep.PART_UNSIGNED))
            continue
        try:
            der = mime.decode_body(sig.headers, sig.body)
            content = mime.decode_body(leaf.headers, leaf.body)
        except ValueError as exc:
            signers.append(rep.SignerReport("smime", rep.INVALID, f"{sig.filename}: {exc}",
                                            covers=[leaf.filename]))
            parts_out.append(rep.PartReport(leaf.filename, "attachment", rep.PART_UNVERIFIABLE,
                                            signature_part=sig.filename))
            continue
        these = smime.verify_detached(content, der, trust, [leaf.filename])
        signers += these
        parts_out.append(rep.PartReport(leaf.filename, "attachment", _part_status(these),
                                        signed_by=these[0].subject or None, signature_part=sig.filename))
    return parts_out, signers


def _part_status(signers: list[rep.SignerReport]) -> str:
    if any(s.status == rep.TAMPERED for s in signers):
        return rep.PART_TAMPERED
    if any(s.status == rep.INVALID for s in signers):
        return rep.PART_UNVERIFIABLE
    return rep.PART_INTACT
