"""What a download says about itself: a file name that cannot hurt, a type that cannot
run, a disposition every browser reads.

- The name (RFC 6266 section 4.3, RFC 5987/8187 for the UTF-8 form): no directory part,
  no control or bidirectional formatting characters (U+202E makes "rapport‮fdp.exe" look
  like a PDF), none of `<>:"/\\|?*`, no Windows device name (CON, NUL, COM1...), no
  leading dots, at most 150 characters keeping the extension. Sent twice:
  `filename="<ASCII>"` for old clients and `filename*=UTF-8''<percent-encoded>`.
- The type: from an allow-list of types a browser does not execute; anything else (HTML,
  SVG, XML, JavaScript, unknown) is `application/octet-stream`. With `nosniff` and the
  response's `Content-Security-Policy: sandbox`, nothing downloaded runs in our origin.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_NAME = 150
FALLBACK = "piece-jointe"
_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)$", re.I)

SAFE_TYPES = frozenset({
    "application/pdf", "application/zip", "application/msword", "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint", "application/rtf", "application/dicom",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff", "image/bmp",
    "text/plain", "text/csv", "message/rfc822",
})


def safe_filename(name: str, *, fallback: str = FALLBACK) -> str:
    """A name that is the same file wherever it is saved, never a path or a trick."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Cc (controls), Cf (format: bidi overrides, zero-width joiners...) and Cs (lone
    # surrogates: the undecodable bytes of a name in a wrong charset) go.
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp"))
    name = _FORBIDDEN.sub("_", name)
    name = " ".join(name.split()).strip(" .")
    if not name:
        return fallback
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if _RESERVED.match(stem.strip()) or _RESERVED.match(name):
        stem = "_" + stem
    ext = ext[:20]
    if len(stem) + len(dot) + len(ext) > MAX_NAME:
        stem = stem[: MAX_NAME - len(dot) - len(ext)].rstrip(" .") or fallback
    return f"{stem}{dot}{ext}" if ext else stem


def ascii_filename(name: str) -> str:
    """The `filename=` fallback: accents folded (é -> e), anything else non-ASCII `_`."""
    folded = unicodedata.normalize("NFKD", name)
    out = "".join(c if 32 <= ord(c) < 127 else ("" if unicodedata.combining(c) else "_") for c in folded)
    out = out.replace('"', "_").replace("\\", "_").replace("%", "_")
    return out.strip(" .") or FALLBACK


def content_disposition(name: str, *, disposition: str = "attachment") -> str:
    safe = safe_filename(name)
    return (f'{disposition}; filename="{ascii_filename(safe)}"; '
            f"filename*=UTF-8''{quote(safe, safe='')}")


def safe_content_type(content_type: str) -> str:
    """The type to send: the declared one when it is in the allow-list, else octets."""
    base = (content_type or "").split(";")[0].strip().lower()
    return base if base in SAFE_TYPES else "application/octet-stream"
