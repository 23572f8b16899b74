"""HPRIM Net (HPRIM Médecin 3.0 text) lab reports: ``parse_hprim_net(bytes)``.

Layout (H.PR.I.M. Médecins v3.0, 1997, as implemented by the LGCs that read it; see
docs/connectors.md): each record is a 12-line header (patient id, name, first name,
two address lines, postcode + city, birth date, NIR + key, request number, request
date, sender, recipient), the human-readable report, then optionally a machine block
``****LAB****`` of ``TEX|text`` and ``RES|...`` lines; ``****FIN****`` closes the
record, ``****FINFICHIER****`` the file. Several records (patients) may follow each
other in one file.

Refused (ParseError): a header with fewer than 12 lines, a ``****LAB****`` block not
closed by ``****FIN****``, an empty file. Tolerated with a warning: no
``****FINFICHIER****``, a record without ``****LAB****``, a last record not closed by
``****FIN****``, an invalid NIR key, a NIR month that is not the birth month, an
unknown flag.

Pure function: no I/O, no logging, no state between calls.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .decoding import BLOCK_SIZE, collector_paused, detect_layout, iter_text_blocks
from .errors import ParseError
from .flags import interpret_flag
from .nir import nir_birth_month, nir_key_is_valid

KIND = "hprim_net"
HEADER_LINES = 12
MARKER_LAB = "****LAB****"
MARKER_END = "****FIN****"
MARKER_END_OF_FILE = "****FINFICHIER****"
_MARKERS = frozenset({MARKER_LAB, MARKER_END, MARKER_END_OF_FILE})
# RES|label|code|type|value|unit|low|high|flag|status|value2|unit2|low2|high2|
# index after split on "|", RES = 0 (formats notes §1; Mediboard expects 14 fields).
RES_FIELDS = ("label", "code", "type", "value", "unit", "low", "high", "flag", "status",
              "value2", "unit2", "low2", "high2")
_RES_WIDTH = len(RES_FIELDS) + 1
HEADER_NAMES = ("patient id", "last name", "first name", "address 1", "address 2",
                "postcode and city", "birth date", "NIR", "request id", "request date",
                "sender", "recipient")
_POSTCODE_CITY = re.compile(r"^(\S+)\s+(.*)$")
_SHARED_MAX = 16
_EMPTY = [""] * _RES_WIDTH
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class Party:
    """Sender (line 11) or recipient (line 12): a 10-column code then a name."""

    code: str
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name}


@dataclass(frozen=True, slots=True)
class HprimNetPatient:
    id: str
    last_name: str
    first_name: str
    address1: str
    address2: str
    postcode: str
    city: str
    birth_date: str | None  # ISO YYYY-MM-DD, None when absent or unreadable
    nir: str  # the insured person's NIR: not necessarily the patient's, never an INS
    nir_key: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "last_name": self.last_name, "first_name": self.first_name,
                "address1": self.address1, "address2": self.address2,
                "postcode": self.postcode, "city": self.city, "birth_date": self.birth_date,
                "nir": self.nir, "nir_key": self.nir_key}


class HprimNetResult(NamedTuple):
    """One ``RES`` line. Values stay strings as written (``"4,8"``, ``"<2"``).

    A typed NamedTuple rather than a frozen dataclass, like the HPRIM Santé result: both
    are immutable, but a big file has hundreds of thousands of these and a frozen
    dataclass's constructor (one ``object.__setattr__`` per field) costs about six times
    as much, a third of the per-line budget of the throughput target."""

    label: str
    code: str
    type: str
    value: str
    unit: str
    low: str
    high: str
    flag: str
    status: str
    value2: str
    unit2: str
    low2: str
    high2: str
    abnormal: bool | None
    off_scale: str | None
    line: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in RES_FIELDS}
        out["abnormal"] = self.abnormal
        if self.off_scale is not None:
            out["off_scale"] = self.off_scale
        out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class HprimNetRecord:
    """One patient's report: header, free text, LAB block."""

    start_line: int
    patient: HprimNetPatient
    request_id: str
    request_date: str | None
    sender: Party
    recipient: Party
    body_text: str
    results: tuple[HprimNetResult, ...]
    lab_text: tuple[str, ...]
    has_lab: bool
    end_line: int

    @property
    def abnormal_count(self) -> int:
        return sum(1 for result in self.results if result.abnormal)

    def to_dict(self) -> dict[str, Any]:
        return {"start_line": self.start_line, "patient": self.patient.to_dict(),
                "request_id": self.request_id, "request_date": self.request_date,
                "sender": self.sender.to_dict(), "recipient": self.recipient.to_dict(),
                "body_text": self.body_text,
                "results": [result.to_dict() for result in self.results],
                "lab_text": list(self.lab_text)}


@dataclass(frozen=True, slots=True)
class HprimNetFile:
    records: tuple[HprimNetRecord, ...]
    has_finfichier: bool
    encoding: str
    line_ending: str
    warnings: tuple[str, ...]

    kind = KIND

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": KIND, "encoding": self.encoding,
                               "line_ending": self.line_ending,
                               "has_finfichier": self.has_finfichier,
                               "records": [record.to_dict() for record in self.records]}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def parse_date(text: str) -> str | None:
    """HPRIM Net dates are ``DD/MM/YYYY`` (sometimes followed by a time); a few senders
    write ``YYYY-MM-DD`` or ``DDMMYYYY``. Returns ISO ``YYYY-MM-DD`` or None."""
    token = text.split(" ", 1)[0].strip() if text else ""
    if not token:
        return None
    try:
        if len(token) == 10 and token[2] == "/" and token[5] == "/":
            day, month, year = int(token[:2]), int(token[3:5]), int(token[6:])
        elif len(token) == 10 and token[4] == "-" and token[7] == "-":
            year, month, day = int(token[:4]), int(token[5:7]), int(token[8:])
        elif len(token) == 8 and (token.isascii() and token.isdigit()):
            day, month, year = int(token[:2]), int(token[2:4]), int(token[4:])
        else:
            return None
        return _dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def record_marker(text: str) -> str | None:
    if "****" not in text:
        return None
    candidate = text.strip().upper()
    return candidate if candidate in _MARKERS else None


def needs_strip(text: str) -> bool:
    """Whether the fields of a ``RES`` line may carry white space to trim: a space or
    tab next to a ``|``, or white space ending the line. Fields are trimmed only then:
    most lines have none, and 13 ``str.strip`` calls per line are a tenth of the parse."""
    return " |" in text or "| " in text or "\t" in text or text[-1:].isspace()


class _FlagMeanings(dict[str, tuple[bool | None, str | None, bool]]):
    """``interpret_flag`` once per distinct flag of a parse (a file uses a handful)."""

    def __missing__(self, flag: str) -> tuple[bool | None, str | None, bool]:
        meaning = self[flag] = interpret_flag(flag)
        return meaning


def _party(text: str) -> Party:
    # Lines 11/12: code in the first 10 columns (space padded), then the name.
    return Party(code=text[:10].strip(), name=text[10:].strip())


class _Builder:
    """Collects one parse; mutable while the lines stream in, frozen at the end."""

    def __init__(self, share_strings: bool = True) -> None:
        self.share_strings = share_strings
        self.warnings: list[str] = []
        self.shared: dict[str, str] = {}
        self.flags = _FlagMeanings()

    def patient(self, header: list[tuple[int, str]]) -> HprimNetPatient:
        values = [text.strip() for _, text in header]
        start = header[0][0]
        postcode, city = "", values[5]
        match = _POSTCODE_CITY.match(values[5])
        if match:
            postcode, city = match.group(1), match.group(2).strip()
        birth_date = parse_date(values[6])
        if values[6] and birth_date is None:
            self.warnings.append(f"line {start + 6}, header line 7 (birth date): "
                                 f"unreadable date {values[6]!r}")
        nir, key = self.nir(values[7], start + 7)
        if nir and key and not nir_key_is_valid(nir, key):
            self.warnings.append(f"line {start + 7}, header line 8 (NIR): key {key} does not "
                                 "match the NIR")
        month = nir_birth_month(nir)
        if birth_date and month is not None and month != int(birth_date[5:7]):
            self.warnings.append(f"line {start + 7}, header line 8 (NIR): NIR month {month:02d} "
                                 f"is not the birth month {birth_date[5:7]}")
        return HprimNetPatient(id=values[0], last_name=values[1], first_name=values[2],
                               address1=values[3], address2=values[4], postcode=postcode,
                               city=city, birth_date=birth_date, nir=nir, nir_key=key)

    def nir(self, text: str, line: int) -> tuple[str, str]:
        compact = text.replace(" ", "")
        if len(compact) == 15:
            return compact[:13], compact[13:]
        if len(compact) != 13 and compact:
            self.warnings.append(f"line {line}, header line 8 (NIR): {len(compact)} characters, "
                                 "13 or 15 expected")
        return compact, ""

    def result(self, number: int, text: str, spaced: bool = True) -> HprimNetResult:
        """One ``RES`` line. ``spaced=False``: the caller saw no space or tab next to a
        ``|`` in the whole LAB run holding the line, which spares the same three tests on
        each line (only white space ending the line is left to look for)."""
        fields = text.split("|", _RES_WIDTH)
        if len(fields) < _RES_WIDTH:
            fields.extend(_EMPTY[:_RES_WIDTH - len(fields)])
        if needs_strip(text) if spaced else text[-1:].isspace():
            values = list(map(str.strip, fields[1:_RES_WIDTH]))
        else:  # nothing to strip (the common case)
            values = fields[1:_RES_WIDTH]
        if self.share_strings:
            # A whole-file result keeps one copy of what repeats (labels, units, ranges,
            # values); a streaming reader drops each record soon and skips the cost.
            share = self.shared.setdefault
            values = [share(field, field) for field in values]
        abnormal, off_scale, known = self.flags[values[7]]
        if not known:
            self.warnings.append(f"line {number}, RES field 8 (flag): unknown flag "
                                 f"{values[7]!r}, counted as not abnormal")
        # The 13 fields then abnormal, off_scale and line, in the field order: built with
        # tuple.__new__ from the list, a third cheaper than the NamedTuple's own __new__
        # (a Python-level wrapper taking 16 arguments).
        row: list[Any] = values
        row += (abnormal, off_scale, number)
        return _new_tuple(HprimNetResult, row)


class HprimNetReader:
    """Streaming reader: ``records()`` yields each record as soon as its ``****FIN****``
    is read, so a router can handle a 50 MB file holding the input and one record, not
    the whole result. It raises ParseError at the first refused construct, possibly
    after having yielded earlier records: treat what it yielded as final only once the
    iteration ends. ``warnings`` and ``has_finfichier`` are complete then.
    ``share_strings`` keeps one copy of repeated field values, for callers that keep
    every record (``parse_hprim_net`` does)."""

    def __init__(self, data: bytes, share_strings: bool = False) -> None:
        self._data = data
        self._block_size = BLOCK_SIZE  # smaller in the tests, to cross block ends
        self.layout = detect_layout(data)
        self._build = _Builder(share_strings)
        self.warnings = self._build.warnings
        self.has_finfichier = False

    def records(self) -> Iterator[HprimNetRecord]:
        """The records, one line-level state machine (between records, header, body,
        LAB block, after ``****FINFICHIER****``) walked over decoded text blocks.

        Only a line holding ``****`` can change the state inside a record (every marker
        has it), so in the body and the LAB block the text up to the next ``****`` is
        taken as one run found by ``str.find``: the body run is kept as one slice (most
        of a file's lines are never visited one by one) and the LAB run is split once.
        The line holding ``****`` ends the run and is the only one tested as a marker.
        A CRLF file's blocks keep their CRLF (``eol``): only the body is converted to LF,
        when its record is built, and the rest of the text is never copied for that."""
        layout, build = self.layout, self._build
        warnings = build.warnings
        result = build.result
        count = 0
        state = "between"
        header: list[tuple[int, str]] = []
        body: list[str] = []  # runs of whole lines, each line ending with ``eol``
        results: list[HprimNetResult] = []
        lab_text: list[str] = []
        lab_line = 0
        has_finfichier = False
        trailing_noted = False
        number = 1  # the number of the line at ``position``
        eol = "\r\n" if layout.line_ending == "CRLF" else "\n"  # how the blocks end lines
        cut = len(eol)

        def finish(end_line: int, has_lab: bool) -> HprimNetRecord:
            start, _ = header[0]
            values = header
            return HprimNetRecord(
                start_line=start, patient=build.patient(header), request_id=values[8][1].strip(),
                request_date=_request_date(values[9], build), sender=_party(values[10][1]),
                recipient=_party(values[11][1]), body_text=_body_text(body, eol),
                results=tuple(results), lab_text=tuple(lab_text), has_lab=has_lab,
                end_line=end_line)

        for number, text in iter_text_blocks(self._data, layout, self._block_size,
                                             keep_crlf=True):
            find = text.find
            position, size = 0, len(text)
            while position < size:
                if state == "body" or state == "lab":
                    # The run: every line up to the next one holding "****", that line
                    # included, or up to the end of the block.
                    star = find("****", position)
                    stop = find("\n", star) + 1 if star >= 0 else size
                    if state == "lab":
                        run = text[position:stop - cut]
                        lines = run.split(eol)
                        spaced = " |" in run or "| " in run or "\t" in run
                        position = stop
                        for line in lines:
                            head = line[:4]
                            if head == "RES|":
                                results.append(result(number, line, spaced))
                            elif head == "TEX|":
                                lab_text.append(line[4:].strip())
                            else:
                                marker = record_marker(line)
                                if marker == MARKER_END:
                                    yield finish(number, True)
                                    count += 1
                                    state = "between"
                                elif marker is not None:
                                    raise ParseError(KIND, lab_line, "LAB section",
                                                     f"****LAB**** section not closed by "
                                                     f"****FIN**** ({marker} at line {number})")
                                elif line.strip().upper() in ("TEX", "TEX|"):
                                    lab_text.append("")
                                elif line.strip():
                                    warnings.append(f"line {number}: line in the LAB section "
                                                    "is neither TEX nor RES; ignored")
                            number += 1
                        continue
                    # The body: the run's lines before the one holding "****" are kept as
                    # they are; that line, the last of the run, is tested below.
                    last = text.rfind("\n", position, star) + 1 if star >= 0 else size
                    if last > position:
                        body.append(text[position:last])
                        number += text.count("\n", position, last)
                        position = last
                        if star < 0:
                            break
                    line = text[position:stop - cut]
                    marker = record_marker(line)
                    if marker is None:
                        body.append(text[position:stop])
                    elif marker == MARKER_LAB:
                        state, lab_line = "lab", number
                    elif marker == MARKER_END:
                        yield finish(number, False)
                        count += 1
                        state = "between"
                    else:
                        warnings.append(f"line {header[0][0]}: record not closed by ****FIN****")
                        yield finish(number, False)
                        count += 1
                        has_finfichier, state = True, "done"
                    position = stop
                    number += 1
                    continue
                if state == "header":
                    # The rest of the header at once when it is in this block and no line
                    # of it holds "****" (else line by line below, to name the line).
                    missing = HEADER_LINES - len(header)
                    stop = position
                    for _ in range(missing):
                        stop = find("\n", stop) + 1
                        if not stop:
                            break
                    if stop and find("****", position, stop) < 0:
                        header += enumerate(text[position:stop - cut].split(eol), number)
                        number += missing
                        position = stop
                        state, body, results, lab_text = "body", [], [], []
                        continue
                stop = find("\n", position) + 1
                line = text[position:stop - cut]
                position = stop
                if state == "header":
                    marker = record_marker(line) if "****" in line else None
                    if marker is not None:
                        raise ParseError(KIND, number, f"header line {len(header) + 1} "
                                         f"({HEADER_NAMES[len(header)]})",
                                         f"header truncated: {marker} where 12 header lines "
                                         f"are expected (record starting at line {header[0][0]})")
                    header.append((number, line))
                    if len(header) == HEADER_LINES:
                        state, body, results, lab_text = "body", [], [], []
                elif state == "between":
                    if line.strip():
                        marker = record_marker(line)
                        if marker == MARKER_END_OF_FILE:
                            has_finfichier, state = True, "done"
                        elif marker is not None:
                            warnings.append(f"line {number}: {marker} outside a record; ignored")
                        else:
                            header, state = [(number, line)], "header"
                # state == "done": after ****FINFICHIER****
                elif line.strip() and not trailing_noted:
                    warnings.append(f"line {number}: text after ****FINFICHIER**** ignored")
                    trailing_noted = True
                number += 1

        if state == "header":
            raise ParseError(KIND, header[0][0], "header",
                             f"header truncated: {len(header)} of 12 lines before the end of "
                             "the file")
        if state == "lab":
            raise ParseError(KIND, lab_line, "LAB section",
                             "****LAB**** section not closed by ****FIN**** before the end of "
                             "the file")
        if state == "body":
            warnings.append(f"line {header[0][0]}: record not closed by ****FIN****")
            # Every line since the header went to the body: the last one is the file's.
            yield finish(number - 1, False)
            count += 1
        if not count:
            raise ParseError(KIND, None, None, "no HPRIM Net record (empty file)")
        if not has_finfichier:
            warnings.append("no ****FINFICHIER**** at the end of the file")
        self.has_finfichier = has_finfichier


def parse_hprim_net(data: bytes) -> HprimNetFile:
    """Parse an HPRIM Net file (or mail body) into its records; see the module doc."""
    reader = HprimNetReader(data, share_strings=True)
    with collector_paused():
        records = tuple(reader.records())
    return HprimNetFile(records=records, has_finfichier=reader.has_finfichier,
                        encoding=reader.layout.encoding, line_ending=reader.layout.line_ending,
                        warnings=tuple(reader.warnings))


def _body_text(runs: list[str], eol: str) -> str:
    """The body's lines joined by LF: ``runs`` are whole lines, each ending with ``eol``."""
    text = "".join(runs)[:-len(eol)]
    return text.replace("\r\n", "\n") if eol == "\r\n" else text


def _request_date(line: tuple[int, str], build: _Builder) -> str | None:
    number, text = line
    value = text.strip()
    parsed = parse_date(value)
    if value and parsed is None:
        build.warnings.append(f"line {number}, header line 10 (request date): unreadable "
                              f"date {value!r}")
    return parsed
