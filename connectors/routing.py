"""Routing, sans-IO: which files of a message a connector reads, which rule each part
matches, the output bytes and the deterministic file name of each delivery.

Rules are per mailbox and ordered; the first rule whose every condition holds wins and
fans out to each of its targets (one job per part and target). A part no rule matches
is not delivered anywhere: the message stays in the mailbox, untouched.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.formats import ParseError, parse_hprim_net
from connectors.formats.hprim_net import HprimNetFile
from connectors.formats.summary import ContentPart

# Attachment names a connector reads (issue 13: .hpr .hpm .hps .txt, IHE_XDM.ZIP, .xml).
FILE_SUFFIXES = (".hpr", ".hpm", ".hps", ".txt", ".xml", ".zip")
MATCH_KEYS = ("kind", "sender", "domain", "codecda")
CODECDA_HEADER = "x-mss-codecda"


def parse_match(text: str) -> dict[str, str]:
    """`kind=hprim_net,sender=lab@b.example` -> {"kind": ..., "sender": ...}; ValueError
    with one sentence for anything else. An empty text matches everything."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise ValueError(f"a match condition is key=value, not {item!r}.")
        if key not in MATCH_KEYS:
            raise ValueError(f"unknown match key {key!r} (known: {', '.join(MATCH_KEYS)}).")
        if key in out:
            raise ValueError(f"match key {key!r} given twice.")
        out[key] = value.lower() if key != "kind" or not value.lower().startswith("cda:") else "cda:" + value[4:]
    return out


def codecda_values(headers: Sequence[tuple[str, str]]) -> frozenset[str]:
    """The document type codes of a message's `X-MSS-CODECDA` fields (MSSanté DST
    ECO.2.4.1, SC.MSS/CONF.15: set by the sender when an IHE_XDM archive holding a CDA is
    attached; comma-separated when there are several, e.g. `34112-3,PRESC-BIO`), folded
    to lower case. Empty when the message has none."""
    out: set[str] = set()
    for name, value in headers:
        if name.lower() == CODECDA_HEADER:
            out.update(code.strip().lower() for code in value.split(",") if code.strip())
    return frozenset(out)


def matches(match: Mapping[str, str], *, kind: str, container: str, sender: str,
            codecda: frozenset[str] = frozenset()) -> bool:
    """Every condition holds. `kind` is the part's (`hprim_net`, `hprim_sante`,
    `cda:<LOINC>`); `container` is `xdm` for a part read out of an IHE_XDM archive, so
    `kind=xdm` matches every document of one. `sender` is the envelope/From address.
    `codecda`: the message's X-MSS-CODECDA codes (`codecda_values`); a `codecda`
    condition holds when the header is present and names that code."""
    wanted = match.get("kind")
    if wanted is not None and wanted != kind and wanted != container:
        return False
    sender = sender.strip().lower()
    if "sender" in match and match["sender"] != sender:
        return False
    if "codecda" in match and match["codecda"].lower() not in codecda:
        return False
    return not ("domain" in match and sender.rpartition("@")[2] != match["domain"])


def first_match(rules: Sequence[Any], *, kind: str, container: str, sender: str,
                codecda: frozenset[str] = frozenset()) -> Any | None:
    """The first rule (in order) whose match holds: first match wins."""
    for rule in rules:
        if matches(rule.match, kind=kind, container=container, sender=sender, codecda=codecda):
            return rule
    return None


@dataclass(frozen=True)
class CandidateFile:
    """Bytes a connector tries to parse: an attachment, or the text body."""

    index: int  # position among the message's candidate files (part of the job key)
    source: str  # the MIME part id ("2") or "body"
    filename: str
    data: bytes


def is_candidate_name(filename: str) -> bool:
    return filename.lower().endswith(FILE_SUFFIXES)


def body_is_hprim_net(data: bytes) -> bool:
    """An Apicrypt-style mail whose text body *is* the HPRIM Net report. Tried only on a
    body that has HPRIM Net's LAB marker, and kept only if it parses: an ordinary mail
    body is never quarantined for failing to be HPRIM."""
    if b"****LAB****" not in data and b"****FIN****" not in data:
        return False
    try:
        result = parse_hprim_net(data)
    except ParseError:
        return False
    return isinstance(result, HprimNetFile) and bool(result.records)


_SAFE = re.compile(r"[^A-Za-z0-9-]+")


def _ascii_word(text: str, limit: int) -> str:
    """A file-name-safe word: accents dropped (NFKD), anything else but letters, digits
    and '-' dropped, at most `limit` characters, `X` when nothing is left."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _SAFE.sub("", folded)[:limit] or "X"


def output_name(when: datetime, sender: str, family: str, key: str, extension: str = "hpr") -> str:
    """`<yyyymmddHHMMSS>_<sender>_<NOM>_<key8>.<ext>`: deterministic from the job (the
    message's arrival time and the job key), so a retry writes the same name."""
    return (f"{when.strftime('%Y%m%d%H%M%S')}_{_ascii_word(sender, 40)}_"
            f"{_ascii_word(family, 40).upper()}_{key[:8]}.{extension}")


def record_bytes(data: bytes, first_line: int, last_line: int) -> bytes:
    """Lines `first_line`..`last_line` (1-based, physical, any of CRLF/LF/CR) of the
    original bytes, as they were: one HPRIM Net record delivered in its own encoding."""
    lines = re.split(rb"(?<=\r\n)|(?<=\n)(?<!\r\n)|(?<=\r)(?!\n)", data)
    return b"".join(lines[first_line - 1:last_line])


def part_summary(part: ContentPart, container: str, source: str) -> dict[str, Any]:
    """The `extra["documents"]` entry of a part (what the webmail lists; the store is the
    one place patient names are kept, never the audit or the logs)."""
    return {"kind": "xdm" if container == "xdm" and not part.kind.startswith("cda:") else part.kind,
            "container": container, "part": source, "index": part.index,
            "patient": {"family": part.patient.family, "given": part.patient.given,
                        "birth_date": part.patient.birth_date, "ins": part.patient.ins},
            "sender": part.sender, "date": part.date,
            "results": part.result_count, "abnormal": part.abnormal_count}
