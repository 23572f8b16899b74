"""ENVELOPE and BODY/BODYSTRUCTURE (RFC 3501 section 7.4.2), from `mssmail.mime.tree` entities.

Header values are given as they are in the message (unfolded, encoded-words left for
the client to decode, as RFC 3501 expects); addresses are read by `mssmail.mime.addresses`
(groups, comments, source routes) and parameters by `mssmail.mime.params` (folded values,
RFC 2231), the readings the summary, crypto and the submission policy share.
The results are IMAP-encoded bytes, ready to cache and to send.
"""

from __future__ import annotations

from typing import Any

from mssmail.imap import render
from mssmail.imap.render import Atom
from mssmail.mime import addresses, params
from mssmail.mime.headers import Field
from mssmail.mime.tree import Entity

NIL = None


def _octets(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _addresses(fields: list[Field]) -> list[Atom] | None:
    """RFC 3501 `env-from` etc.: a list of (name adl mailbox host), NIL when absent.

    A group is a (NIL NIL name NIL) entry, its members, then (NIL NIL NIL NIL); an
    obsolete source route (RFC 5322 4.4) goes in the adl field."""
    out: list[list[Any]] = []
    for f in fields:
        for entry in addresses.parse(f.value).entries:
            if isinstance(entry, addresses.GroupStart):
                out.append([None, None, _octets(entry.name), None])
            elif isinstance(entry, addresses.GroupEnd):
                out.append([None, None, None, None])
            else:
                out.append([_octets(entry.name), _octets(entry.route), _octets(entry.local) or b"",
                            _octets(entry.domain) if entry.domain else None])
    # RFC 3501 9: `"(" 1*address ")"`, the addresses side by side with no space between.
    return [Atom(b"".join(render.encode(a) for a in out))] if out else None


def envelope(entity: Entity) -> list[Any]:
    h = entity.headers
    from_ = _addresses(h.all("from"))
    sender = _addresses(h.all("sender")) or from_
    reply_to = _addresses(h.all("reply-to")) or from_
    return [
        h.raw("date"), h.raw("subject"), from_, sender, reply_to,
        _addresses(h.all("to")), _addresses(h.all("cc")), _addresses(h.all("bcc")),
        h.raw("in-reply-to"), h.raw("message-id"),
    ]


def _param_list(structured: params.Structured) -> list[Any] | None:
    """("name" "value" ...) of a structured header; RFC 2231 values joined but kept
    encoded (`name*` "charset'lang'%XX"), the decoding being the client's."""
    out: list[Any] = []
    for param in structured.params:
        if param.charset is not None:
            out += [(param.name + "*").encode("ascii", "replace"), param.encoded().encode("ascii", "replace")]
        else:
            out += [_octets(param.name), _octets(param.value)]
    return out or None


def _disposition(entity: Entity) -> list[Any] | None:
    field = entity.headers.first("content-disposition")
    if field is None:
        return None
    structured = params.parse_structured(field.value)
    if not structured.value:
        return None
    return [_octets(structured.value), _param_list(structured)]


def _lines(body: bytes) -> int:
    count = body.count(b"\n")
    return count + 1 if body and not body.endswith(b"\n") else count


def _language(entity: Entity) -> Any:
    value = entity.headers.raw("content-language")
    if value is None:
        return None
    tags = [t.strip() for t in value.split(b",") if t.strip()]
    return tags[0] if len(tags) == 1 else tags or None


def body_structure(entity: Entity, extended: bool) -> list[Any]:
    """BODYSTRUCTURE (`extended`) or BODY of one entity, as nested lists."""
    if entity.is_multipart and entity.children:
        # RFC 3501 9: `body-type-mpart = 1*body SP media-subtype`, the bodies side by side.
        out: list[Any] = [Atom(b"".join(render.encode(body_structure(child, extended))
                                        for child in entity.children))]
        out.append(entity.content_type.split("/", 1)[1].encode())
        if extended:
            out += [_param_list(entity.headers.content()), _disposition(entity), _language(entity),
                    entity.headers.raw("content-location")]
        return out
    if entity.is_multipart:  # no boundary or no part: shown as an empty text part
        main, sub = "text", "plain"
    else:
        main, sub = entity.content_type.split("/", 1)
    h = entity.headers
    type_params = _param_list(h.content())
    if main == "text" and type_params is None:
        type_params = [b"charset", b"us-ascii"]  # RFC 2045 section 5.2
    body = entity.body
    out = [main.encode(), sub.encode(), type_params, h.raw("content-id"), h.raw("content-description"),
           (h.raw("content-transfer-encoding") or b"7bit").lower(), len(body)]
    if entity.is_message and entity.children:
        inner = entity.children[0]
        out += [envelope(inner), body_structure(inner, extended), _lines(body)]
    elif main == "text":
        out.append(_lines(body))
    if extended:
        out += [h.raw("content-md5"), _disposition(entity), _language(entity), h.raw("content-location")]
    return out


def encode_envelope(entity: Entity) -> bytes:
    return render.encode(envelope(entity))


def encode_structure(entity: Entity, extended: bool) -> bytes:
    return render.encode(body_structure(entity, extended))


__all__ = ["NIL", "Atom", "body_structure", "encode_envelope", "encode_structure", "envelope"]
