"""Sample messages for the crypto tests."""

from __future__ import annotations

import base64


def message_with_attachments(docs: dict[str, bytes] | None = None) -> bytes:
    docs = docs or {"resultats.pdf": b"%PDF-1.4 resultats " * 50,
                    "compte-rendu.txt": b"Compte rendu : RAS\n" * 20}
    parts = [b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour,\r\nci-joint les documents.\r\n"]
    for name, data in docs.items():
        parts.append((f'Content-Type: application/octet-stream; name="{name}"\r\n'
                      "Content-Transfer-Encoding: base64\r\n"
                      f'Content-Disposition: attachment; filename="{name}"\r\n\r\n').encode()
                     + base64.encodebytes(data).replace(b"\n", b"\r\n"))
    body = b"".join(b"--BOUND\r\n" + p + b"\r\n" for p in parts) + b"--BOUND--\r\n"
    return (b"From: alice@a.example\r\nTo: bob@a.example\r\nSubject: Documents\r\n"
            b"Message-ID: <1@a.example>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="BOUND"\r\n\r\n' + body)


SIMPLE = (b"From: alice@a.example\nTo: bob@a.example\nSubject: Bonjour\n"
          b"Content-Type: text/plain; charset=utf-8\n\nBonjour Bob,\nle patient va bien.\n")
