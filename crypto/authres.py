"""Authentication-Results (RFC 8601): which fields claim to be ours, as a reader parses them.

Light on purpose (no crypto imports): the SMTP listeners, SMTP worker processes
included, strip forged verdicts from what a peer sends before adding their own, and
crypto.mailflow strips again below them before adding the S/MIME verdict.
"""

from __future__ import annotations

import re

# RFC 2045 5.1 tspecials: they end a token (an authserv-id is a "value": a token or a
# quoted-string, RFC 8601 2.2).
_TSPECIALS = set('()<>@,;:\\"/[]?=')
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r|$)")


def _skip_cfws(text: str, at: int) -> int | None:
    """The index after white space and comments (nested, with quoted-pairs; RFC 5322
    3.2.2) from `at`; None for a comment that never ends."""
    depth = 0
    while at < len(text):
        char = text[at]
        if depth and char == "\\":
            at += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and char not in " \t\r\n":
            return at
        at += 1
    return None if depth else at


def authserv_id(value: str) -> str | None:
    """The authserv-id of an Authentication-Results value, as a reader finds it (RFC
    8601 2.2: [CFWS] authserv-id ...), lowercased and without a final dot (a DNS name
    written absolute is the same name); None when it cannot be read."""
    at = _skip_cfws(value, 0)
    if at is None or at >= len(value):
        return None
    if value[at] == '"':
        chars = []
        at += 1
        while at < len(value) and value[at] != '"':
            if value[at] == "\\":
                at += 1
            chars.append(value[at:at + 1])
            at += 1
        if at >= len(value):
            return None
        found = "".join(chars)
    else:
        end = at
        while end < len(value) and value[end] > " " and value[end] not in _TSPECIALS and value[end] != "\x7f":
            end += 1
        found = value[at:end]
    found = found.strip().lower().rstrip(".")
    return found or None


def claims_authserv_id(value: bytes, ours: str) -> bool:
    """Whether a reader could take this Authentication-Results value for one of ours.
    A value that cannot be read counts as ours when it names us anywhere: dropping a
    broken header loses nothing, keeping one a lenient reader trusts would."""
    text = value.decode("utf-8", "replace")
    ours = ours.lower().rstrip(".")
    found = authserv_id(text)
    if found is None:
        return ours in text.lower()
    return found == ours


def _header_lines(message: bytes) -> tuple[list[bytes], int]:
    """The header block's lines, line ends kept (CRLF, or a bare LF or CR: some readers
    end lines on those, so they split here too), and the offset where the block ends."""
    lines: list[bytes] = []
    at = 0
    for match in _LINE.finditer(message):
        line = match.group()
        if not line:
            break
        at = match.end()
        if line in (b"\r\n", b"\n", b"\r"):
            return lines, at - len(line)
        lines.append(line)
    return lines, len(message)


def strip_our_results(message: bytes, authserv_id: str, *, below_first_received: bool = False) -> bytes:
    """Drop Authentication-Results claiming our authserv-id (RFC 8601 section 5), as a
    reader would parse it: CFWS and comments around the id, a quoted id, a final dot,
    any case, white space before the colon, lines ended by a bare LF or CR.

    With `below_first_received`, the fields above and including the first Received are
    kept: the SMTP listeners put there their own trace and their Authentication-Results
    of how the sender authenticated, over what the peer sent (already stripped).

    Everything else stays byte for byte as received: only the header block is
    rewritten, and only when such a header is there.
    """
    lines, end = _header_lines(message)
    if b"authentication-results" not in message[:end].lower():
        return message  # no such field name, in any case: nothing to drop (the usual case)
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    joined = [b"".join(parts) for parts in fields]
    names = [f.split(b":", 1)[0].strip().lower() if b":" in f else b"" for f in joined]
    # Without a Received there is no trace of ours to keep anything above.
    keep_until = names.index(b"received") + 1 if below_first_received and b"received" in names else 0
    kept = joined[:keep_until]
    dropped = False
    for field, name in zip(joined[keep_until:], names[keep_until:], strict=True):
        if name == b"authentication-results" and claims_authserv_id(field.partition(b":")[2], authserv_id):
            dropped = True
            continue
        kept.append(field)
    if not dropped:
        return message
    return b"".join(kept) + message[end:]
