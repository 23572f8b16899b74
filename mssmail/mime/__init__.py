"""One MIME home: header blocks, parameters, addresses and the part tree (sans-IO).

Every part of the server reads MIME here, so that what crypto verifies, what the
listing summary records, what IMAP shows (BODYSTRUCTURE, ENVELOPE, BODY[n]) and what the
submission policy checks are one reading of the same octets:

- `headers`: header block split (RFC 5322 2.2), defects, field access, RFC 2047 words;
- `params`: Content-Type/Disposition parameters (RFC 2045 5.1, RFC 2231);
- `addresses`: address lists (RFC 5322 3.4, 4.4);
- `tree`: the part tree on byte offsets (RFC 2046 5.1.1, message/rfc822);
- `fastpath`: the regex reading of plain header blocks the summary takes first;
- `transfer`: canonical form, entity cuts for signing, base64/quoted-printable.

The byte helpers of `transfer` are re-exported here: `from mssmail import mime` then
`mime.split_entity(...)`, as crypto calls them.
"""

from mssmail.mime.transfer import (
    b64_decode_into,
    b64_lines,
    b64_lines_into,
    body_offset,
    canonical,
    decode_body,
    decode_body_into,
    field_name,
    header_fields,
    is_canonical,
    multipart_parts,
    new_boundary,
    parse_headers,
    split_content_headers,
    split_entity,
)

__all__ = [
    "b64_decode_into", "b64_lines", "b64_lines_into", "body_offset", "canonical", "decode_body",
    "decode_body_into", "field_name", "header_fields", "is_canonical", "multipart_parts", "new_boundary",
    "parse_headers", "split_content_headers", "split_entity",
]
