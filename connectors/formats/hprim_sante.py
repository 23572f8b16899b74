"""HPRIM Santé 2.x lab results: ``parse_hprim_sante(bytes, escape_mode=...)``.

Structure (HPRIM Santé 2.2-2.5, ASTM E1238 lineage; formats notes §2): one record per
line, ``H`` first with the 5 delimiters (field, component, repeat, escape,
sub-component) right after the ``H``, then ``P`` (patient), ``OBR`` (request),
``OBX`` (result), ``C`` (comment on the previous record), ``A`` (continuation of the
previous record, for records longer than 220 characters) and ``L`` (trailer) last.
Field positions are the index after splitting on the field separator with the record
type at 0; for ``H`` the delimiter string itself is field 1.

Refused (ParseError): no ``H`` first, an HL7 ``MSH`` file, duplicate delimiters,
``OBR`` before any ``P``, ``OBX`` before any ``OBR``, no ``L`` trailer (a truncated
file), a record after ``L``, a second ``H``.

Escapes: the public HPRIM Santé text is not available; two readings exist. The
default ``hl7_named`` decodes the HL7/ASTM named sequences ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``
and ``\\.br\\`` (written with the declared escape character) and leaves unknown ones
untouched; ``literal_next`` (libHprim's reading) takes the character after the escape
character literally. The mode is a per-sender setting.

Pure function: no I/O, no logging, no state between calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal, NamedTuple

from .decoding import TextLayout, collector_paused, detect_layout, iter_line_blocks
from .errors import ParseError
from .flags import interpret_flag

KIND = "hprim_sante"
EscapeMode = Literal["hl7_named", "literal_next"]
ESCAPE_MODES: tuple[str, ...] = ("hl7_named", "literal_next")
_SKIPPED_RECORDS = frozenset({"FAC", "ACT", "REG", "AP", "AC", "ERR"})
_EMPTY = [""] * 32
_MISSING = object()
_RESULT = object()
_OBX_FIELDS = itemgetter(1, 2, 3, 5, 6, 7, 8, 11, 14)
_KNOWN = frozenset({"OBX", "OBR", "P", "C", "L", "H"})
_RANGE_BETWEEN = re.compile(r"^\s*(-?\d+(?:[.,]\d+)?)\s*-\s*(-?\d+(?:[.,]\d+)?)\s*$")
_RANGE_BELOW = re.compile(r"^\s*<\s*(-?\d+(?:[.,]\d+)?)\s*$")
_RANGE_ABOVE = re.compile(r"^\s*>\s*(-?\d+(?:[.,]\d+)?)\s*$")
_SHARED_MAX = 16
_NOISE = "\x00\x01\x02\x03\x04\x0b\x0c\x1a\x1c\x1d\x1e\x1f"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The five characters after ``H``, in the order the standard declares them."""

    field: str
    component: str
    repeat: str
    escape: str
    subcomponent: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "component": self.component, "repeat": self.repeat,
                "escape": self.escape, "subcomponent": self.subcomponent}


class Escaper:
    """Decode and encode one file's escape sequences (delimiters and mode fixed)."""

    def __init__(self, delimiters: Delimiters, mode: str = "hl7_named") -> None:
        if mode not in ESCAPE_MODES:
            raise ValueError(f"unknown HPRIM Santé escape mode {mode!r}")
        self.delimiters = delimiters
        self.mode = mode
        esc = re.escape(delimiters.escape)
        self._named = {"F": delimiters.field, "S": delimiters.component,
                       "R": delimiters.repeat, "E": delimiters.escape,
                       "T": delimiters.subcomponent, ".br": "\n"}
        if mode == "hl7_named":
            self._pattern = re.compile(esc + r"(F|S|R|E|T|\.br)" + esc)
        else:
            self._pattern = re.compile(esc + r"(.)", re.DOTALL)

    def split(self, text: str, separator: str) -> list[str]:
        """Split on ``separator``. In ``literal_next`` mode an escaped separator is
        content, so the split must skip escape pairs (they stay for :meth:`decode`);
        named sequences never contain a delimiter, so a plain split is exact."""
        esc = self.delimiters.escape
        if self.mode == "hl7_named" or esc not in text:
            return text.split(separator)
        parts: list[str] = []
        current: list[str] = []
        index, length = 0, len(text)
        while index < length:
            char = text[index]
            if char == esc and index + 1 < length:
                current.append(text[index:index + 2])
                index += 2
                continue
            if char == separator:
                parts.append("".join(current))
                current = []
            else:
                current.append(char)
            index += 1
        parts.append("".join(current))
        return parts

    def decode(self, text: str) -> str:
        if self.delimiters.escape not in text:
            return text
        if self.mode == "hl7_named":
            return self._pattern.sub(lambda m: self._named[m.group(1)], text)
        return self._pattern.sub(lambda m: m.group(1), text)

    def encode(self, text: str) -> str:
        """The inverse of :meth:`decode` for any text (used by the HPRIM Santé writer
        and the round-trip property test)."""
        d = self.delimiters
        specials = (d.escape, d.field, d.component, d.repeat, d.subcomponent)
        if self.mode == "literal_next":
            return "".join(d.escape + ch if ch in specials else ch for ch in text)
        names = {d.escape: "E", d.field: "F", d.component: "S", d.repeat: "R",
                 d.subcomponent: "T", "\n": ".br"}
        return "".join(f"{d.escape}{names[ch]}{d.escape}" if ch in names else ch
                       for ch in text)


@dataclass(frozen=True, slots=True)
class HprimSanteHeader:
    filename: str
    sender_id: str
    sender_name: str
    message_type: str
    receiver_id: str
    receiver_name: str
    processing_id: str
    version: str
    datetime: str | None
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "sender_id": self.sender_id,
                "sender_name": self.sender_name, "message_type": self.message_type,
                "receiver_id": self.receiver_id, "receiver_name": self.receiver_name,
                "processing_id": self.processing_id, "version": self.version,
                "datetime": self.datetime}


@dataclass(frozen=True, slots=True)
class Address:
    street: str
    street2: str
    city: str
    postcode: str

    def to_dict(self) -> dict[str, str]:
        return {"street": self.street, "street2": self.street2, "city": self.city,
                "postcode": self.postcode}


@dataclass(frozen=True, slots=True)
class CodedTest:
    code: str
    label: str
    coding_system: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "label": self.label}


@dataclass(frozen=True, slots=True)
class Prescriber:
    id: str
    last_name: str
    first_name: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "last_name": self.last_name, "first_name": self.first_name}


class HprimSanteResult(NamedTuple):
    """One ``OBX``. ``value`` is the field as written (a CE value keeps its components;
    ``value_code``/``value_label`` split it); ``range`` is raw, ``low``/``high`` a
    convenience split of ``a-b``, ``<b`` and ``>a``. An immutable typed NamedTuple, not a
    frozen dataclass: see ``HprimNetResult`` (the constructor is six times cheaper)."""

    seq: str
    value_type: str
    code: str
    label: str
    coding_system: str
    value: str
    unit: str
    range: str
    flag: str
    status: str
    datetime: str | None
    abnormal: bool | None
    off_scale: str | None
    low: str | None
    high: str | None
    value_code: str | None
    value_label: str | None
    line: int
    comments: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq, "value_type": self.value_type, "code": self.code,
            "label": self.label, "coding_system": self.coding_system, "value": self.value,
            "unit": self.unit, "range": self.range, "flag": self.flag, "status": self.status,
            "datetime": self.datetime, "abnormal": self.abnormal}
        if self.off_scale is not None:
            out["off_scale"] = self.off_scale
        out.update({"low": self.low, "high": self.high, "comments": list(self.comments)})
        if self.value_type == "CE":
            out["value_code"] = self.value_code
            out["value_label"] = self.value_label
        out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class HprimSanteRequest:
    seq: str
    line: int
    placer_id: str
    filler_id: str
    tests: tuple[CodedTest, ...]
    priority: str
    collection_datetime: str | None
    reception_datetime: str | None
    prescriber: Prescriber
    status: str
    comments: tuple[str, ...]
    results: tuple[HprimSanteResult, ...]

    @property
    def abnormal_count(self) -> int:
        return sum(1 for result in self.results if result.abnormal)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "line": self.line, "placer_id": self.placer_id,
                "filler_id": self.filler_id, "tests": [t.to_dict() for t in self.tests],
                "priority": self.priority, "collection_datetime": self.collection_datetime,
                "reception_datetime": self.reception_datetime,
                "prescriber": self.prescriber.to_dict(), "status": self.status,
                "comments": list(self.comments),
                "results": [r.to_dict() for r in self.results]}


@dataclass(frozen=True, slots=True)
class HprimSantePatient:
    seq: str
    line: int
    id_prescriber: str
    id_lab: str
    last_name: str
    first_name: str
    birth_name: str
    birth_date: str | None
    sex: str
    address: Address
    requests: tuple[HprimSanteRequest, ...]
    comments: tuple[str, ...]

    @property
    def abnormal_count(self) -> int:
        return sum(request.abnormal_count for request in self.requests)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq, "line": self.line, "id_prescriber": self.id_prescriber,
            "id_lab": self.id_lab, "last_name": self.last_name, "first_name": self.first_name,
            "birth_name": self.birth_name, "birth_date": self.birth_date, "sex": self.sex,
            "address": self.address.to_dict(),
            "requests": [r.to_dict() for r in self.requests]}
        if self.comments:
            out["comments"] = list(self.comments)
        return out


@dataclass(frozen=True, slots=True)
class HprimSanteFile:
    delimiters: Delimiters
    header: HprimSanteHeader
    patients: tuple[HprimSantePatient, ...]
    encoding: str
    line_ending: str
    escape_mode: str
    warnings: tuple[str, ...]

    kind = KIND

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": KIND, "delimiters": self.delimiters.to_dict(),
                               "header": self.header.to_dict(),
                               "patients": [p.to_dict() for p in self.patients],
                               "encoding": self.encoding, "line_ending": self.line_ending}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def parse_datetime(text: str) -> str | None:
    """``YYYYMMDD[HHMM[SS]]`` -> ``YYYY-MM-DD[THH:MM[:SS]]``; None when absent or not
    one of these shapes."""
    if not (text.isascii() and text.isdigit()):
        return None
    n = len(text)
    if n not in (8, 12, 14):
        return None
    month, day = int(text[4:6]), int(text[6:8])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    out = f"{text[:4]}-{text[4:6]}-{text[6:8]}"
    if n >= 12:
        if int(text[8:10]) > 23 or int(text[10:12]) > 59:
            return None
        out += f"T{text[8:10]}:{text[10:12]}"
    if n == 14:
        if int(text[12:14]) > 60:
            return None
        out += f":{text[12:14]}"
    return out


def split_range(text: str) -> tuple[str | None, str | None]:
    """(low, high) of a reference range written ``a-b``, ``<b`` or ``>a``."""
    match = _RANGE_BETWEEN.match(text)
    if match:
        return match.group(1), match.group(2)
    match = _RANGE_BELOW.match(text)
    if match:
        return None, match.group(1)
    match = _RANGE_ABOVE.match(text)
    if match:
        return match.group(1), None
    return None, None


@dataclass(slots=True)
class _OpenRequest:
    fields: dict[str, Any]
    comments: list[str] = field(default_factory=list)
    results: list[HprimSanteResult] = field(default_factory=list)


@dataclass(slots=True)
class _OpenPatient:
    fields: dict[str, Any]
    comments: list[str] = field(default_factory=list)
    requests: list[HprimSanteRequest] = field(default_factory=list)


def _read_delimiters(line: int, text: str) -> Delimiters:
    if text.startswith("MSH"):
        raise ParseError(KIND, line, "MSH", "HL7 v2 message (MSH segment), not an HPRIM "
                         "Santé file")
    if not text.startswith("H") or len(text) < 6:
        raise ParseError(KIND, line, "H", "the first record must be the H header")
    chars = text[1:6]
    if len(set(chars)) != 5:
        raise ParseError(KIND, line, "H field 1 (delimiters)",
                         f"delimiters {chars!r} are not 5 different characters")
    if any(ch.isalnum() or ch.isspace() for ch in chars):
        raise ParseError(KIND, line, "H field 1 (delimiters)",
                         f"delimiters {chars!r} contain a letter, digit or space")
    if len(text) > 6 and text[6] != chars[0]:
        raise ParseError(KIND, line, "H field 1 (delimiters)",
                         "the delimiters are not followed by the field separator")
    return Delimiters(*chars)


def _records(data: bytes, layout: TextLayout) -> Iterator[tuple[int, str]]:
    """Logical records (line, text), streamed: physical lines with their ``A|``
    continuations joined, blank lines dropped; one record of lookahead, never the whole
    file as text."""
    pending_line = 0
    pending: list[str] = []
    continuation = ""
    for first, lines in iter_line_blocks(data, layout):
        for number, raw in enumerate(lines, first):
            # Non-printable bytes around a record are transport noise (the standard's
            # record terminator is CR; anything after it up to the next record is ignored).
            text = raw.strip(_NOISE) if raw[-1:] < " " or raw[:1] < " " else raw
            if not text or text.isspace():
                continue
            if not pending:
                continuation = "A" + (text[1] if len(text) > 1 else "|")
                pending_line, pending = number, [text]
            elif text.startswith(continuation):
                # HPRIM Santé §B.1 (via libHprim): the text after "A|" is appended to the
                # previous record as is, no separator inserted; then the record is split.
                pending.append(text[2:])
            else:
                yield pending_line, pending[0] if len(pending) == 1 else "".join(pending)
                pending_line, pending = number, [text]
    if pending:
        yield pending_line, pending[0] if len(pending) == 1 else "".join(pending)


class HprimSanteReader:
    """Streaming reader: the ``H`` header is read at once (``delimiters``, ``header``);
    ``patients()`` yields each patient as soon as the next ``P`` or the ``L`` closes it,
    so a router can handle a big file holding the input and one patient. ParseError may
    come after earlier patients were yielded (a missing ``L`` is only seen at the end):
    treat them as final once the iteration ends; ``warnings`` is complete then.
    ``share_strings`` keeps one copy of repeated values, for callers that keep every
    patient (``parse_hprim_sante`` does)."""

    def __init__(self, data: bytes, escape_mode: str = "hl7_named",
                 share_strings: bool = False) -> None:
        if escape_mode not in ESCAPE_MODES:
            raise ValueError(f"unknown HPRIM Santé escape mode {escape_mode!r}")
        self.escape_mode = escape_mode
        self.warnings: list[str] = []
        self.layout = detect_layout(data)
        self._records = _records(data, self.layout)
        first = next(self._records, None)
        if first is None:
            raise ParseError(KIND, None, None, "empty file: no H header")
        self._first_line, first_text = first
        self.delimiters = _read_delimiters(self._first_line, first_text)
        self._parser = _RecordParser(self.delimiters, Escaper(self.delimiters, escape_mode),
                                     self.warnings, share_strings)
        self.header = self._parser.header(self._first_line, first_text)

    def patients(self) -> Iterator[HprimSantePatient]:
        warnings, parser, records = self.warnings, self._parser, self._records
        first_line = self._first_line
        delimiters = self.delimiters
        # Records are frozen as soon as nothing more can attach to them (a C comment only
        # follows its record), so the file is never held twice: once as builders, once frozen.
        patient: _OpenPatient | None = None
        request: _OpenRequest | None = None
        result: tuple[Any, ...] | None = None  # the last OBX's fields, until its comments end
        result_comments: list[str] = []
        last: Any = None  # the builder a C comment attaches to (_RESULT: the pending OBX)
        trailer_line: int | None = None
        sep = delimiters.field
        obx_prefix = "OBX" + sep
        number = first_line
        for number, text in records:
            if text.startswith(obx_prefix) and request is not None and trailer_line is None:
                # The hot path: one more result in the open request.
                if result is not None:
                    request.results.append(HprimSanteResult(*result, tuple(result_comments))
                                           if result_comments else HprimSanteResult(*result))
                    result_comments = []
                result = parser.result(number, text)
                last = _RESULT
                continue
            kind = text[:text.find(sep)] if sep in text else text
            if kind not in _KNOWN:
                kind = kind.strip().upper()
            if trailer_line is not None:
                raise ParseError(KIND, number, kind or "record",
                                 f"record after the L trailer of line {trailer_line}")
            if kind == "C":
                comment = parser.comment(text)
                if last is None:
                    warnings.append(f"line {number}: C comment on the H header ignored: "
                                    f"{comment[:60]!r}")
                elif last is _RESULT:
                    result_comments.append(comment)
                else:
                    last.comments.append(comment)
                continue
            if result is not None:
                assert request is not None
                request.results.append(HprimSanteResult(*result, tuple(result_comments))
                                       if result_comments else HprimSanteResult(*result))
                result, result_comments = None, []
            if kind == "OBX":
                # Only reached without an open request (the hot path above takes the others).
                raise ParseError(KIND, number, "OBX", "OBX result before any OBR request")
            if kind in ("OBR", "P", "L") and request is not None:
                assert patient is not None
                patient.requests.append(_freeze_request(request))
                request = None
            if kind == "OBR":
                if patient is None:
                    raise ParseError(KIND, number, "OBR", "OBR request before any P patient")
                request = last = _OpenRequest(parser.request(number, text))
            elif kind in ("P", "L"):
                if patient is not None:
                    yield _freeze_patient(patient)
                    patient = None
                if kind == "P":
                    patient = last = _OpenPatient(parser.patient(number, text))
                else:
                    trailer_line = number
            elif kind == "H":
                raise ParseError(KIND, number, "H", "second H header inside the file")
            elif kind == "MSH":
                raise ParseError(KIND, number, "MSH", "HL7 v2 segment in an HPRIM Santé file")
            elif kind in _SKIPPED_RECORDS:
                warnings.append(f"line {number}: {kind} record skipped (not a result)")
            else:
                warnings.append(f"line {number}: unknown record type {kind!r} skipped")
        if trailer_line is None:
            raise ParseError(KIND, number, "L", "no L trailer: the file is truncated")




def parse_hprim_sante(data: bytes, escape_mode: str = "hl7_named") -> HprimSanteFile:
    """Parse an HPRIM Santé file; see the module doc for what is refused."""
    reader = HprimSanteReader(data, escape_mode, share_strings=True)
    with collector_paused():
        patients = tuple(reader.patients())
    return HprimSanteFile(
        delimiters=reader.delimiters, header=reader.header, patients=patients,
        encoding=reader.layout.encoding, line_ending=reader.layout.line_ending,
        escape_mode=escape_mode, warnings=tuple(reader.warnings))


def _freeze_request(request: _OpenRequest) -> HprimSanteRequest:
    return HprimSanteRequest(**request.fields, comments=tuple(request.comments),
                             results=tuple(request.results))


def _freeze_patient(patient: _OpenPatient) -> HprimSantePatient:
    return HprimSantePatient(**patient.fields, requests=tuple(patient.requests),
                             comments=tuple(patient.comments))


class _RecordParser:
    """Field extraction for one file's delimiters."""

    def __init__(self, delimiters: Delimiters, escaper: Escaper, warnings: list[str],
                 share_strings: bool = True) -> None:
        self.share_strings = share_strings
        self.d = delimiters
        self.decode: Callable[[str], str] = escaper.decode
        self.split = escaper.split
        self.warnings = warnings
        self.shared: dict[str, str] = {}
        self.ranges: dict[str, tuple[str, str | None, str | None]] = {}
        self.dates: dict[str, str | None] = {}
        self.flags: dict[str, tuple[str, bool | None, str | None, bool]] = {}
        self.tests: dict[str, tuple[str, str, str]] = {}

    def fields(self, text: str, width: int) -> list[str]:
        parts = self.split(text, self.d.field)
        if len(parts) < width:
            parts.extend([""] * (width - len(parts)))
        return parts

    def value(self, raw: str) -> str:
        text = self.decode(raw).strip()
        if len(text) <= _SHARED_MAX:
            return self.shared.setdefault(text, text)
        return text

    def components(self, raw: str, count: int) -> list[str]:
        parts = [self.value(part) for part in self.split(raw, self.d.component)]
        if len(parts) < count:
            parts.extend([""] * (count - len(parts)))
        return parts

    def date(self, raw: str, line: int, where: str) -> str | None:
        text = raw.strip()
        if not text:
            return None
        parsed = parse_datetime(text)
        if parsed is None:
            self.warnings.append(f"line {line}, {where}: unreadable date {text!r}")
        return parsed

    def header(self, line: int, text: str) -> HprimSanteHeader:
        f = self.fields(text, 14)
        sender = self.components(f[4], 2)
        receiver = self.components(f[9], 2)
        version = self.components(f[12], 1)[0]
        return HprimSanteHeader(
            filename=self.value(f[2]), sender_id=sender[0], sender_name=sender[1],
            message_type=self.value(f[6]), receiver_id=receiver[0], receiver_name=receiver[1],
            processing_id=self.value(f[11]), version=version,
            datetime=self.date(f[13], line, "H field 13 (date)"), line=line)

    def patient(self, line: int, text: str) -> dict[str, Any]:
        f = self.fields(text, 11)
        name = self.components(f[5], 2)
        address = self.components(f[10], 5)
        sex = self.value(f[8])
        return {"seq": self.value(f[1]), "line": line, "id_prescriber": self.value(f[2]),
                "id_lab": self.value(f[3]), "last_name": name[0], "first_name": name[1],
                "birth_name": self.value(f[6]),
                "birth_date": self.date(f[7], line, "P field 7 (birth date)"), "sex": sex,
                "address": Address(street=address[0], street2=address[1], city=address[2],
                                   postcode=address[4])}

    def request(self, line: int, text: str) -> dict[str, Any]:
        f = self.fields(text, 26)
        tests = []
        for repeat in self.split(f[4], self.d.repeat):
            if not repeat.strip():
                continue
            code, label, system = self.components(repeat, 3)[:3]
            tests.append(CodedTest(code=code, label=label, coding_system=system))
        prescriber = self.components(f[16], 3)
        return {"seq": self.value(f[1]), "line": line, "placer_id": self.value(f[2]),
                "filler_id": self.value(f[3]), "tests": tuple(tests),
                "priority": self.value(f[5]),
                "collection_datetime": self.date(f[7], line, "OBR field 7 (collection)"),
                "reception_datetime": self.date(f[14], line, "OBR field 14 (reception)"),
                "prescriber": Prescriber(id=prescriber[0], last_name=prescriber[1],
                                         first_name=prescriber[2]),
                "status": self.value(f[25])}

    def result(self, line: int, text: str) -> tuple[Any, ...]:
        """HprimSanteResult's arguments (but the comments) for one OBX.

        The hot path of a big file. A record without the escape character (nearly all)
        is split with ``str.split``; the values that repeat from one result to the next
        (test, unit, range, flag, status, date) are converted once per distinct value and
        shared, so a big file costs one copy of each."""
        d = self.d
        if d.escape in text:
            f = self.fields(text, 15)
            seq, value_type, value, unit, range_text, flag, status, raw_date = (
                self.value(f[i]) for i in (1, 2, 5, 6, 7, 8, 11, 14))
            code, label, system = self.components(f[3], 3)[:3]
        else:
            f = text.split(d.field, 15)
            if len(f) < 15:
                f.extend(_EMPTY[:15 - len(f)])
            share = self.shared.setdefault
            seq, value_type, raw_test, value, unit, range_text, flag, status, raw_date = (
                _OBX_FIELDS(f))
            seq, value_type, value, unit, status = (
                seq.strip(), value_type.strip(), value.strip(), unit.strip(), status.strip())
            if self.share_strings:
                # A whole-file result keeps one copy of what repeats; a streaming reader
                # drops each patient soon and skips the cost.
                seq, value_type, unit, status = (share(seq, seq), share(value_type, value_type),
                                                 share(unit, unit), share(status, status))
                if len(value) <= 8:  # short values ("4.27", "NEG") repeat in a big file
                    value = share(value, value)
            flag = flag.strip()
            range_text = range_text.strip()
            raw_date = raw_date.strip()
            test = self.tests.get(raw_test)
            if test is None:
                parts = [share(x, x) for x in map(str.strip, raw_test.split(d.component, 3))]
                parts.extend(_EMPTY[:3 - len(parts)])
                test = self.tests[raw_test] = (parts[0], parts[1], parts[2])
            code, label, system = test
        value_code = value_label = None
        if value_type == "CE":
            # The CE value keeps its components as written; code and label split out.
            value = f[5].strip()
            value_code, value_label = self.components(f[5], 2)[:2]
        bounds = self.ranges.get(range_text)
        if bounds is None:
            bounds = self.ranges[range_text] = (range_text, *split_range(range_text))
        meaning = self.flags.get(flag)
        if meaning is None:
            meaning = self.flags[flag] = (flag, *interpret_flag(flag))
        flag, abnormal, off_scale, known = meaning
        if not known:
            self.warnings.append(f"line {line}, OBX field 8 (flag): unknown flag {flag!r}, "
                                 "counted as not abnormal")
        when = self.dates.get(raw_date, _MISSING)
        if when is _MISSING:
            when = self.dates[raw_date] = self.date(raw_date, line, "OBX field 14 (date)")
        elif when is None and raw_date:
            self.warnings.append(f"line {line}, OBX field 14 (date): unreadable date "
                                 f"{raw_date!r}")
        return (seq, value_type, code, label, system, value, unit, bounds[0], flag, status,
                when, abnormal, off_scale, bounds[1], bounds[2], value_code, value_label, line)

    def comment(self, text: str) -> str:
        f = self.fields(text, 4)
        return self.value(f[3])
