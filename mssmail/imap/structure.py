"""ENVELOPE and BODY/BODYSTRUCTURE (RFC 3501 section 7.4.2), from `mimetree` entities.

Header values are given as they are in the message (unfolded, encoded-words left for
the client to decode, as RFC 3501 expects); addresses are split by `email.utils`.
The results are IMAP-encoded bytes, ready to cache and to send.
"""

from __future__ import annotations

import email.utils
import re
from typing import Any

from mssmail.imap import render
from mssmail.imap.mimetree import Entity
from mssmail.imap.render import Atom

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_EMPTY_GROUP = re.compile(r"^\s*([^:<>\"@,;]+):\s*;\s*$")
NIL = None


def _raw(value: Any) -> bytes | None:
    """A header value as bytes (8-bit octets kept), unfolded and trimmed."""
    if value is None:
        return None
    text = _FOLD.sub("", str(value)).strip()
    return text.encode("utf-8", "surrogateescape")


def _addresses(values: list[Any] | None) -> list[list[Any]] | None:
    """RFC 3501 `env-from` etc.: a list of (name adl mailbox host), NIL when absent."""
    if not values:
        return None
    texts = [_FOLD.sub("", str(v)) for v in values]
    out: list[list[Any]] = []
    for text in texts:
        group = _EMPTY_GROUP.match(text)
        if group:  # RFC 3501: group start (NIL NIL name NIL) and end (NIL NIL NIL NIL)
            out.append([None, None, group.group(1).strip().encode("utf-8", "surrogateescape"), None])
            out.append([None, None, None, None])
            continue
        try:
            pairs = email.utils.getaddresses([text])
        except Exception:
            pairs = []
        for name, addr in pairs:
            if not addr and not name:
                continue
            local, at, host = addr.rpartition("@")
            if not at:
                local, host = addr, ""
            out.append([name.encode("utf-8", "surrogateescape") if name else None, None,
                        local.encode("utf-8", "surrogateescape") if local else b"",
                        host.encode("utf-8", "surrogateescape") if host else None])
    return out or None


def envelope(entity: Entity) -> list[Any]:
    h = entity.headers
    from_ = _addresses(h.get_all("from"))
    sender = _addresses(h.get_all("sender")) or from_
    reply_to = _addresses(h.get_all("reply-to")) or from_
    return [
        _raw(h.get("date")), _raw(h.get("subject")), from_, sender, reply_to,
        _addresses(h.get_all("to")), _addresses(h.get_all("cc")), _addresses(h.get_all("bcc")),
        _raw(h.get("in-reply-to")), _raw(h.get("message-id")),
    ]


def _param_list(entity: Entity, header: str, skip_first: bool = True) -> list[Any] | None:
    """("name" "value" ...) from a structured header; RFC 2231 values kept encoded."""
    try:
        params = entity.headers.get_params(header=header, failobj=[])
    except Exception:
        return None
    out: list[Any] = []
    for i, (key, value) in enumerate(params):
        if i == 0 and skip_first:
            continue
        if not key:
            continue
        if isinstance(value, tuple):  # RFC 2231: charset'language'%XX
            charset, language, text = value
            out += [(key + "*").encode("ascii", "replace"),
                    email.utils.encode_rfc2231(str(text), charset or "utf-8", language or None).encode(
                        "ascii", "replace")]
        else:
            out += [key.encode("utf-8", "surrogateescape"),
                    email.utils.unquote(str(value)).encode("utf-8", "surrogateescape")]
    return out or None


def _disposition(entity: Entity) -> list[Any] | None:
    if entity.headers.get("content-disposition") is None:
        return None
    try:
        params = entity.headers.get_params(header="content-disposition", failobj=[])
    except Exception:
        params = []
    if not params:
        return None
    kind = params[0][0].encode("utf-8", "surrogateescape")
    return [kind, _param_list(entity, "content-disposition")]


def _lines(body: bytes) -> int:
    count = body.count(b"\n")
    return count + 1 if body and not body.endswith(b"\n") else count


def _language(entity: Entity) -> Any:
    value = _raw(entity.headers.get("content-language"))
    if value is None:
        return None
    tags = [t.strip() for t in value.split(b",") if t.strip()]
    return tags[0] if len(tags) == 1 else tags or None


def body_structure(entity: Entity, extended: bool) -> list[Any]:
    """BODYSTRUCTURE (`extended`) or BODY of one entity, as nested lists."""
    if entity.is_multipart and entity.children:
        out: list[Any] = [body_structure(child, extended) for child in entity.children]
        out.append(entity.content_type.split("/", 1)[1].encode())
        if extended:
            out += [_param_list(entity, "content-type"), _disposition(entity), _language(entity),
                    _raw(entity.headers.get("content-location"))]
        return out
    if entity.is_multipart:  # no boundary or no part: shown as an empty text part
        main, sub = "text", "plain"
    else:
        main, sub = entity.content_type.split("/", 1)
    params = _param_list(entity, "content-type")
    if main == "text" and params is None:
        params = [b"charset", b"us-ascii"]  # RFC 2045 section 5.2
    h = entity.headers
    body = entity.body
    out = [main.encode(), sub.encode(), params, _raw(h.get("content-id")),
           _raw(h.get("content-description")),
           (_raw(h.get("content-transfer-encoding")) or b"7bit").lower(), len(body)]
    if entity.is_message and entity.children:
        inner = entity.children[0]
        out += [envelope(inner), body_structure(inner, extended), _lines(body)]
    elif main == "text":
        out.append(_lines(body))
    if extended:
        out += [_raw(h.get("content-md5")), _disposition(entity), _language(entity),
                _raw(h.get("content-location"))]
    return out


def encode_envelope(entity: Entity) -> bytes:
    return render.encode(envelope(entity))


def encode_structure(entity: Entity, extended: bool) -> bytes:
    return render.encode(body_structure(entity, extended))


__all__ = ["NIL", "Atom", "body_structure", "encode_envelope", "encode_structure", "envelope"]
