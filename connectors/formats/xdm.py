"""IHE XDM packages (``IHE_XDM.ZIP``) as MSSanté carries CDA documents: ``read_xdm``.

Layout (IHE ITI TF-1 §16, TF-3 §4.2): ``README.TXT`` and ``INDEX.HTM`` at the root,
one folder per submission set ``IHE_XDM/SUBSETnn/`` holding ``METADATA.XML`` (an ebRS
3.0 ``SubmitObjectsRequest``) and the documents its ``URI`` slots name. Names are
matched case-insensitively (senders differ on ``METADATA.XML`` vs ``metadata.xml``).

An archive is attacker-controlled, so before anything is decompressed: at most
``max_entries`` entries, ``max_total_bytes`` uncompressed in all and a
compression ratio of at most ``max_ratio`` per entry (entries under 64 KiB are
exempt: tiny files compress absurdly well); entry names and document URIs that leave
their folder (``..``, absolute paths, backslashes, drive letters) are refused, as
are encrypted entries and names that collide once case is ignored. Each document's
SHA-1 and size are checked against its metadata (IHE XDM requires both).

``read_xdm`` takes the ZIP bytes (pure: the archive is read in memory) or a directory
(an unzipped package, read with the same bounds).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from .cda_dlu import INS_OIDS, parse_cda_dlu, parse_cda_header
from .errors import ParseError
from .xmlsafe import parse_xml

KIND = "ihe_xdm"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS = {"rim": RIM}
# XDS.b identifiers (IHE ITI TF-3 §4.2.5, Table 4.2.5-1 and -2).
DOC_ENTRY_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DOC_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DOC_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DOC_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DOC_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DOC_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DOC_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DOC_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SET_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SET_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SET_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SET_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
_METADATA = re.compile(r"^ihe_xdm/([^/]+)/metadata\.xml$")
_RATIO_EXEMPT_BYTES = 64 * 1024
_READ_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class XdmLimits:
    """Bounds on what an archive may cost before it is refused."""

    max_entries: int = 1000
    max_total_bytes: int = 200 * 1024 * 1024
    max_ratio: int = 100


@dataclass(frozen=True, slots=True)
class XdmDocument:
    entry_id: str
    uri: str
    path: str
    mime_type: str
    hash_sha1: str
    size: int
    unique_id: str | None
    patient_id: str | None
    source_patient_id: str | None
    type_code: str | None
    format_code: str | None
    class_code: str | None
    confidentiality_code: str | None
    creation_time: str | None
    language: str | None
    title: str | None
    author_person: str | None
    data: bytes
    content: Any  # the parsed Dlu, a CdaHeader for another CDA, or None
    line: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "entry_id": self.entry_id, "uri": self.uri, "path": self.path,
            "mime_type": self.mime_type, "hash_sha1": self.hash_sha1, "size": self.size,
            "unique_id": self.unique_id, "patient_id": self.patient_id,
            "source_patient_id": self.source_patient_id, "type_code": self.type_code,
            "format_code": self.format_code, "class_code": self.class_code,
            "confidentiality_code": self.confidentiality_code,
            "creation_time": self.creation_time, "language": self.language,
            "title": self.title, "author_person": self.author_person}
        if self.content is not None:
            out["content"] = self.content.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class XdmSubmissionSet:
    dir: str
    metadata: str
    unique_id: str | None
    source_id: str | None
    submission_time: str | None
    patient_id: str | None
    ins: str | None
    ins_oid: str | None
    intended_recipients_raw: tuple[str, ...]
    intended_recipients: tuple[str, ...]
    content_type_code: str | None
    documents: tuple[XdmDocument, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"dir": self.dir, "metadata": self.metadata, "unique_id": self.unique_id,
                "source_id": self.source_id, "submission_time": self.submission_time,
                "patient_id": self.patient_id, "ins": self.ins, "ins_oid": self.ins_oid,
                "intended_recipients_raw": list(self.intended_recipients_raw),
                "intended_recipients": list(self.intended_recipients),
                "content_type_code": self.content_type_code,
                "documents": [d.to_dict() for d in self.documents]}


@dataclass(frozen=True, slots=True)
class XdmPackage:
    root_files: tuple[str, ...]
    submission_sets: tuple[XdmSubmissionSet, ...]
    warnings: tuple[str, ...]

    kind = KIND

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": KIND, "root_files": list(self.root_files),
                               "submission_sets": [s.to_dict() for s in self.submission_sets]}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def split_patient_id(value: str | None) -> tuple[str | None, str | None]:
    """(INS, its OID) from an XDS patientId ``id^^^&oid&ISO[^NH]``; (None, None) when the
    assigning authority is not an INS one. The CX.5 ``^NH`` suffix the ANS profile asks
    for is optional here (older senders omit it)."""
    if not value:
        return None, None
    components = value.split("^")
    authority = components[3] if len(components) > 3 else ""
    parts = authority.split("&")
    oid = parts[1] if len(parts) > 1 else ""
    if oid in INS_OIDS and components[0]:
        return components[0], oid
    return None, None


def recipient_email(value: str) -> str | None:
    """The e-mail of an ``intendedRecipient`` ``XON|XCN|XTN``: XTN component 4
    (``||^^Internet^name@domain``, IHE ITI TF-3 Table 4.2.3.3.7-1)."""
    parts = value.split("|")
    if len(parts) < 3:
        return None
    components = parts[2].split("^")
    email = components[3].strip() if len(components) > 3 else ""
    return email or None


def _check_name(name: str, where: str) -> None:
    parts = name.split("/")
    if (not name or "\\" in name or "\x00" in name or name.startswith("/")
            or re.match(r"^[A-Za-z]:", name) or any(p in ("..", ".") for p in parts)):
        raise ParseError(KIND, None, where, f"path {name!r} leaves its folder (refused)")


def _zip_entries(data: bytes, limits: XdmLimits) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as exc:
        raise ParseError(KIND, None, "zip", f"not a readable ZIP archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise ParseError(KIND, None, "zip", f"{len(infos)} entries, at most "
                             f"{limits.max_entries} allowed")
        declared = sum(info.file_size for info in infos)
        if declared > limits.max_total_bytes:
            raise ParseError(KIND, None, "zip", f"{declared} bytes uncompressed, at most "
                             f"{limits.max_total_bytes} allowed")
        entries: dict[str, bytes] = {}
        total = 0
        for info in infos:
            _check_name(info.filename, "zip entry")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise ParseError(KIND, None, info.filename, "encrypted ZIP entry")
            if (info.file_size > _RATIO_EXEMPT_BYTES
                    and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
                raise ParseError(KIND, None, info.filename,
                                 f"compression ratio above {limits.max_ratio}:1 (zip bomb)")
            chunks = []
            try:
                with archive.open(info) as stream:
                    while True:
                        chunk = stream.read(_READ_CHUNK)
                        if not chunk:
                            break
                        total += len(chunk)
                        if total > limits.max_total_bytes:
                            raise ParseError(KIND, None, info.filename,
                                             "archive larger than allowed once decompressed")
                        chunks.append(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
                    ValueError, zlib.error, struct.error) as exc:
                # zipfile reports a corrupt archive with any of these (found by fuzzing).
                raise ParseError(KIND, None, info.filename, f"unreadable entry: {exc}") from None
            entries[info.filename] = b"".join(chunks)
        return entries


def _dir_entries(root: Path, limits: XdmLimits) -> dict[str, bytes]:
    entries: dict[str, bytes] = {}
    total = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                raise ParseError(KIND, None, relative, "not a regular file (links refused)")
            if len(entries) >= limits.max_entries:
                raise ParseError(KIND, None, "directory",
                                 f"more than {limits.max_entries} files")
            total += info.st_size
            if total > limits.max_total_bytes:
                raise ParseError(KIND, None, "directory",
                                 f"more than {limits.max_total_bytes} bytes")
            entries[relative] = path.read_bytes()
    return entries


def read_xdm(source: bytes | Path, limits: XdmLimits | None = None) -> XdmPackage:
    """Read an XDM package from ZIP bytes or an unzipped directory."""
    limits = limits or XdmLimits()
    if isinstance(source, (bytes, bytearray, memoryview)):
        entries = _zip_entries(bytes(source), limits)
    else:
        entries = _dir_entries(Path(source), limits)
    return read_xdm_entries(entries)


def _slot(element: etree._Element, name: str) -> list[str]:
    for slot in element.findall("rim:Slot", NS):
        if slot.get("name") == name:
            return [(v.text or "").strip() for v in slot.findall("rim:ValueList/rim:Value", NS)]
    return []


def _slot1(element: etree._Element, name: str) -> str | None:
    values = _slot(element, name)
    return values[0] if values else None


def _classification(element: etree._Element, scheme: str) -> etree._Element | None:
    for node in element.findall("rim:Classification", NS):
        if node.get("classificationScheme") == scheme:
            return node
    return None


def _code(element: etree._Element, scheme: str) -> str | None:
    node = _classification(element, scheme)
    return node.get("nodeRepresentation") if node is not None else None


def _external_id(element: etree._Element, scheme: str) -> str | None:
    for node in element.findall("rim:ExternalIdentifier", NS):
        if node.get("identificationScheme") == scheme:
            return (node.get("value") or "").strip() or None
    return None


def _name(element: etree._Element) -> str | None:
    node = element.find("rim:Name/rim:LocalizedString", NS)
    return node.get("value") if node is not None else None


def _uri(element: etree._Element) -> str | None:
    values = _slot(element, "URI")
    if len(values) > 1 and all("|" in v for v in values):
        # ebRS splits long URIs into numbered parts "1|...", "2|..." (ITI TF-3 §4.2.3.2.24).
        ordered = sorted(values, key=lambda v: int(v.split("|", 1)[0] or 0))
        return "".join(v.split("|", 1)[1] for v in ordered)
    return values[0] if values else None


def read_xdm_entries(entries: Mapping[str, bytes]) -> XdmPackage:
    """Read an XDM package given its files by relative POSIX path (pure)."""
    warnings: list[str] = []
    by_lower: dict[str, str] = {}
    for name in entries:
        _check_name(name, "entry")
        key = name.lower()
        if key in by_lower:
            raise ParseError(KIND, None, name, f"{name!r} and {by_lower[key]!r} differ only "
                             "by case")
        by_lower[key] = name
    root_files = tuple(sorted(n for n in entries if "/" not in n))
    for required in ("readme.txt", "index.htm"):
        if required not in by_lower:
            warnings.append(f"no {required.upper()} at the root of the package")
    metadata_names = sorted(n for n in entries if _METADATA.match(n.lower()))
    if not metadata_names:
        raise ParseError(KIND, None, "METADATA.XML",
                         "no IHE_XDM/SUBSETnn/METADATA.XML in the package")
    sets = []
    for metadata_name in metadata_names:
        sets.extend(_submission_sets(metadata_name, entries, by_lower, warnings))
    return XdmPackage(root_files=root_files, submission_sets=tuple(sets),
                      warnings=tuple(warnings))


def _submission_sets(metadata_name: str, entries: Mapping[str, bytes],
                     by_lower: Mapping[str, str], warnings: list[str]) -> list[XdmSubmissionSet]:
    subset_dir = metadata_name.rsplit("/", 1)[0]
    root = parse_xml(entries[metadata_name], KIND, metadata_name)
    objects = root.iter(f"{{{RIM}}}ExtrinsicObject", f"{{{RIM}}}RegistryPackage",
                        f"{{{RIM}}}Association", f"{{{RIM}}}Classification")
    documents: dict[str, etree._Element] = {}
    packages: dict[str, etree._Element] = {}
    members: dict[str, list[str]] = {}
    set_ids: set[str] = set()
    for element in objects:
        tag = etree.QName(element).localname
        if tag == "ExtrinsicObject":
            documents[element.get("id") or ""] = element
        elif tag == "RegistryPackage":
            packages[element.get("id") or ""] = element
        elif tag == "Association" and element.get("associationType") == HAS_MEMBER:
            members.setdefault(element.get("sourceObject") or "", []).append(
                element.get("targetObject") or "")
        elif tag == "Classification" and element.get("classificationNode") == SUBMISSION_SET_NODE:
            set_ids.add(element.get("classifiedObject") or "")
    for package_id, package in packages.items():
        if _external_id(package, SET_UNIQUE_ID):
            set_ids.add(package_id)
    set_ids &= set(packages)
    if not set_ids:
        raise ParseError(KIND, root.sourceline, metadata_name, "no submission set "
                         "(RegistryPackage classified as XDSSubmissionSet)")
    if not documents:
        raise ParseError(KIND, root.sourceline, metadata_name, "no document entry")
    claimed = {target for source in set_ids for target in members.get(source, [])}
    result = []
    for set_id in sorted(set_ids, key=lambda i: packages[i].sourceline or 0):
        package = packages[set_id]
        doc_ids = [t for t in members.get(set_id, []) if t in documents]
        if len(set_ids) == 1:
            for orphan in documents:
                if orphan not in claimed:
                    warnings.append(f"{metadata_name}: document entry {orphan!r} has no "
                                    "HasMember association; read with the submission set")
                    doc_ids.append(orphan)
        patient_id = _external_id(package, SET_PATIENT_ID)
        ins, ins_oid = split_patient_id(patient_id)
        recipients_raw = tuple(_slot(package, "intendedRecipient"))
        docs = tuple(_document(documents[d], subset_dir, metadata_name, entries, by_lower,
                               warnings) for d in doc_ids)
        for doc in docs:
            if patient_id and doc.patient_id and doc.patient_id != patient_id:
                warnings.append(f"{doc.path}: patientId differs from the submission set's")
        result.append(XdmSubmissionSet(
            dir=subset_dir, metadata=metadata_name,
            unique_id=_external_id(package, SET_UNIQUE_ID),
            source_id=_external_id(package, SET_SOURCE_ID),
            submission_time=_slot1(package, "submissionTime"), patient_id=patient_id,
            ins=ins, ins_oid=ins_oid, intended_recipients_raw=recipients_raw,
            intended_recipients=tuple(e for e in map(recipient_email, recipients_raw) if e),
            content_type_code=_code(package, SET_CONTENT_TYPE), documents=docs))
    return result


def _document(element: etree._Element, subset_dir: str, metadata_name: str,
              entries: Mapping[str, bytes], by_lower: Mapping[str, str],
              warnings: list[str]) -> XdmDocument:
    line = element.sourceline or 0
    entry_id = element.get("id") or ""
    uri = _uri(element)
    if not uri:
        raise ParseError(KIND, line, f"{metadata_name} {entry_id} URI",
                         "document entry without a URI slot")
    try:
        _check_name(uri, f"{metadata_name} {entry_id} URI")
    except ParseError as exc:
        raise ParseError(KIND, line, exc.field, exc.message) from None
    wanted = f"{subset_dir}/{uri}".lower()
    path = by_lower.get(wanted)
    if path is None:
        raise ParseError(KIND, line, f"{metadata_name} {entry_id} URI",
                         f"document {uri!r} is not in {subset_dir}/")
    data = entries[path]
    hash_value = (_slot1(element, "hash") or "").lower()
    size_text = _slot1(element, "size")
    actual_hash = hashlib.sha1(data).hexdigest()
    if not hash_value:
        warnings.append(f"{path}: no hash in the metadata")
    elif hash_value != actual_hash:
        raise ParseError(KIND, line, f"{metadata_name} {entry_id} hash",
                         f"SHA-1 of {path} is {actual_hash}, metadata says {hash_value}")
    size = len(data)
    if size_text is None:
        warnings.append(f"{path}: no size in the metadata")
    elif not (size_text.isascii() and size_text.isdigit()) or int(size_text) != size:
        raise ParseError(KIND, line, f"{metadata_name} {entry_id} size",
                         f"{path} is {size} bytes, metadata says {size_text}")
    unique_id = _external_id(element, DOC_UNIQUE_ID)
    author = _classification(element, DOC_AUTHOR)
    mime_type = element.get("mimeType") or ""
    content = _content(data, mime_type, path, unique_id, warnings)
    if element.get("objectType") not in (None, DOC_ENTRY_TYPE):
        warnings.append(f"{path}: objectType {element.get('objectType')} is not a stable "
                        "document entry")
    return XdmDocument(
        entry_id=entry_id, uri=uri, path=path, mime_type=mime_type,
        hash_sha1=hash_value or actual_hash, size=size, unique_id=unique_id,
        patient_id=_external_id(element, DOC_PATIENT_ID),
        source_patient_id=_slot1(element, "sourcePatientId"),
        type_code=_code(element, DOC_TYPE), format_code=_code(element, DOC_FORMAT),
        class_code=_code(element, DOC_CLASS),
        confidentiality_code=_code(element, DOC_CONFIDENTIALITY),
        creation_time=_slot1(element, "creationTime"),
        language=_slot1(element, "languageCode"), title=_name(element),
        author_person=_slot1(author, "authorPerson") if author is not None else None,
        data=data, content=content, line=line)


def _content(data: bytes, mime_type: str, path: str, unique_id: str | None,
             warnings: list[str]) -> Any:
    """The parsed CDA when the document is one (a DLU in full, others by header)."""
    if "xml" not in mime_type.lower() and data[:512].lstrip()[:1] != b"<":
        return None
    root = parse_xml(data, KIND, path)
    if etree.QName(root).localname != "ClinicalDocument":
        warnings.append(f"{path}: XML document that is not a CDA ({etree.QName(root).localname})")
        return None
    try:
        header, header_warnings = parse_cda_header(data)
    except ParseError as exc:
        raise ParseError(KIND, exc.line, f"{path}: {exc.field}", exc.message) from None
    if unique_id and header.unique_id and unique_id != header.unique_id:
        warnings.append(f"{path}: XDSDocumentEntry.uniqueId {unique_id} is not the CDA id "
                        f"{header.unique_id}")
    if header.is_dlu:
        try:
            return parse_cda_dlu(data)
        except ParseError as exc:
            raise ParseError(KIND, exc.line, f"{path}: {exc.field}", exc.message) from None
    warnings.extend(f"{path}: {w}" for w in header_warnings)
    return header
