"""CMS EnvelopedData (RFC 5652 section 6, RFC 3565 AES-CBC, RFC 8017 / RFC 3560 key transport).

Built and read around a ciphertext that is never copied:

- the small parts (RecipientInfos, AlgorithmIdentifiers, OIDs) are encoded and decoded by
  asn1crypto; only the DER/BER length framing of the enclosing SEQUENCEs and of the big
  encryptedContent OCTET STRING is done here (X.690 8.1.2 / 8.1.3);
- encryption writes the AES-256-CBC ciphertext once, with `update_into`, straight into a
  preallocated buffer that already holds the DER header in front of it;
- decryption locates the ciphertext by offsets (definite DER or the indefinite-length,
  chunked BER that `openssl cms` streams) and decrypts it with `update_into` into one
  buffer, or in place over the ciphertext itself (`decrypt_in_place`); the PKCS#7 padding
  is removed by truncating that buffer.

cryptography's PKCS7EnvelopeBuilder / `pkcs7_decrypt_der` copy the content several times
(and the latter accepts RSA PKCS#1 v1.5 key transport only); cryptography still does all
the RSA (PKCS#1 v1.5 or OAEP) and AES work here.
"""

from __future__ import annotations

import os
from typing import Any

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
           "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_AES = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}
_BLOCK = 16
_MAX_DEPTH = 32

# DER of the two content-type OIDs (RFC 5652 4 and 6.1).
_OID_DATA = acms.ContentType("data").dump()
_OID_ENVELOPED = acms.ContentType("enveloped_data").dump()

# X.690 identifier octets used below.
_SEQUENCE, _SET, _OCTET_STRING, _OCTET_STRING_C = 0x30, 0x31, 0x04, 0x24
_CTX0_PRIM, _CTX0_CONS = 0x80, 0xA0


class EnvelopeError(ValueError):
    """Why an EnvelopedData cannot be built or decrypted, in one sentence."""


# --- length framing (X.690 8.1.2 identifier, 8.1.3 length octets) --------------------

def _der_header(tag: int, length: int) -> bytes:
    """Identifier and definite-length octets (X.690 10.1: shortest form)."""
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")


def _element(buf: memoryview, pos: int, limit: int, depth: int = 0) -> tuple[int, int, int, int]:
    """(tag, content start, content end, element end) of the BER element at `pos`.

    `tag` is the identifier octet, or -1 for a multi-octet tag (never used by CMS). An
    indefinite length (X.690 8.1.3.6) is resolved by walking the children to the
    end-of-contents octets; depth is bounded so hostile input cannot recurse without end.
    """
    if depth > _MAX_DEPTH:
        raise EnvelopeError("the encrypted structure is nested too deeply")
    if pos + 2 > limit:
        raise EnvelopeError("the encrypted structure is truncated")
    tag = buf[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # X.690 8.1.2.4: high tag number form
        while pos < limit and buf[pos] & 0x80:
            pos += 1
        pos += 1
        tag = -1
    if pos >= limit:
        raise EnvelopeError("the encrypted structure is truncated")
    first = buf[pos]
    pos += 1
    if first < 0x80:
        end = pos + first
    elif first == 0x80:
        if tag == -1 or not tag & 0x20:
            raise EnvelopeError("the encrypted structure has an indefinite primitive element")
        child = pos
        while True:
            if child + 2 > limit:
                raise EnvelopeError("the encrypted structure is truncated")
            if buf[child] == 0 and buf[child + 1] == 0:
                return tag, pos, child, child + 2
            child = _element(buf, child, limit, depth + 1)[3]
    else:
        size = first & 0x7F
        if size > 8 or pos + size > limit:
            raise EnvelopeError("the encrypted structure has an impossible length")
        length = int.from_bytes(buf[pos:pos + size], "big")
        pos += size
        end = pos + length
    if end > limit:
        raise EnvelopeError("the encrypted structure is truncated")
    return tag, pos, end, end


def _children(buf: memoryview, start: int, end: int, depth: int) -> list[tuple[int, int, int, int, int]]:
    """(tag, element start, content start, content end, element end) of each child."""
    out = []
    pos = start
    while pos < end:
        tag, cstart, cend, eend = _element(buf, pos, end, depth)
        out.append((tag, pos, cstart, cend, eend))
        pos = eend
    return out


def _octet_chunks(buf: memoryview, tag: int, cstart: int, cend: int, depth: int) -> list[tuple[int, int]]:
    """(start, end) of each primitive piece of a possibly constructed OCTET STRING (X.690 8.7)."""
    if depth > _MAX_DEPTH:
        raise EnvelopeError("the encrypted structure is nested too deeply")
    if tag in (_CTX0_PRIM, _OCTET_STRING):
        return [(cstart, cend)]
    if tag not in (_CTX0_CONS, _OCTET_STRING_C):
        raise EnvelopeError("the encrypted content is not an OCTET STRING")
    out: list[tuple[int, int]] = []
    for ctag, _, cs, ce, _ in _children(buf, cstart, cend, depth + 1):
        if ctag not in (_OCTET_STRING, _OCTET_STRING_C):
            raise EnvelopeError("the encrypted content is not an OCTET STRING")
        out += _octet_chunks(buf, ctag, cs, ce, depth + 1)
    return out


# --- encryption ----------------------------------------------------------------------

def _recipient_info(cert: x509.Certificate, cek: bytes, oaep: bool) -> bytes:
    """KeyTransRecipientInfo (RFC 5652 6.2.1) by issuer and serial number, version 0."""
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise EnvelopeError(f"the certificate {cert.subject.rfc4514_string()} has no RSA key")
    if oaep:  # RFC 3560 / RFC 8017 A.2.1, SHA-256 with MGF1-SHA-256
        algo = acms.KeyEncryptionAlgorithm({"algorithm": "rsaes_oaep", "parameters": {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}}}})
        encrypted = key.encrypt(cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                  algorithm=hashes.SHA256(), label=None))
    else:  # RFC 3370 4.2.1: rsaEncryption, parameters NULL
        algo = acms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()})
        encrypted = key.encrypt(cek, padding.PKCS1v15())
    rid = acms.RecipientIdentifier(name="issuer_and_serial_number", value=acms.IssuerAndSerialNumber({
        "issuer": ax509.Name.load(cert.issuer.public_bytes()), "serial_number": cert.serial_number}))
    return acms.RecipientInfo(name="ktri", value=acms.KeyTransRecipientInfo({
        "version": "v0", "rid": rid, "key_encryption_algorithm": algo,
        "encrypted_key": encrypted})).dump()


def encrypt(data: bytes | bytearray | memoryview | list[bytes | bytearray | memoryview],
            recipients: list[x509.Certificate], oaep: bool = False) -> bytearray:
    """ContentInfo(EnvelopedData) DER: AES-256-CBC content, RSA key transport to each.

    `data` is one buffer or a list of pieces encrypted as their concatenation (so a caller
    need not join a header and a big body first); it is read once and never copied. The
    result is one buffer of exactly the DER's size.
    """
    if not recipients:
        raise EnvelopeError("no recipient certificate to encrypt to")
    pieces = [memoryview(p).cast("B") for p in (data if isinstance(data, list) else [data])]
    size = sum(len(p) for p in pieces)
    cek, iv = os.urandom(32), os.urandom(_BLOCK)
    # RFC 5652 6.1: recipientInfos is a SET OF, DER-sorted by encoding (X.690 11.6).
    infos = sorted(_recipient_info(cert, cek, oaep) for cert in recipients)
    ris = _der_header(_SET, sum(map(len, infos))) + b"".join(infos)
    algo = acms.EncryptionAlgorithm({"algorithm": "aes256_cbc", "parameters": iv}).dump()
    version = acms.CMSVersion("v0").dump()  # RFC 5652 6.1: only ktri by issuerAndSerialNumber
    ct_len = (size // _BLOCK + 1) * _BLOCK  # RFC 5652 6.3: always 1 to 16 octets of padding
    content = _der_header(_CTX0_PRIM, ct_len)  # encryptedContent [0] IMPLICIT OCTET STRING
    eci_len = len(_OID_DATA) + len(algo) + len(content) + ct_len
    eci = _der_header(_SEQUENCE, eci_len) + _OID_DATA + algo + content
    env_len = len(version) + len(ris) + len(eci) + ct_len
    env = _der_header(_SEQUENCE, env_len) + version + ris + eci
    explicit = _der_header(_CTX0_CONS, len(env) + ct_len)
    ci_len = len(_OID_ENVELOPED) + len(explicit) + len(env) + ct_len
    prefix = _der_header(_SEQUENCE, ci_len) + _OID_ENVELOPED + explicit + env
    out = bytearray(len(prefix) + ct_len)
    out[:len(prefix)] = prefix
    view = memoryview(out)
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    full = size - size % _BLOCK  # what update_into takes; the rest goes with the padding
    pos, fed, rest = len(prefix), 0, b""
    for piece in pieces:
        take = min(len(piece), full - fed)
        if take > 0:
            # update_into wants block-1 spare octets: at least the final block follows.
            pos += encryptor.update_into(piece[:take], view[pos:len(prefix) + full + _BLOCK])
            fed += take
        rest += bytes(piece[max(take, 0):])
    pad = ct_len - size
    last = encryptor.update(rest + bytes((pad,)) * pad) + encryptor.finalize()
    view[pos:pos + len(last)] = last
    if pos + len(last) != len(out):
        raise EnvelopeError("internal error: ciphertext length mismatch")
    return out


# --- decryption ----------------------------------------------------------------------

def _key_transport_padding(algo: acms.KeyEncryptionAlgorithm) -> padding.AsymmetricPadding:
    name = algo["algorithm"].native
    if name == "rsaes_pkcs1v15":
        return padding.PKCS1v15()
    if name == "rsaes_oaep":
        params = algo["parameters"]
        digest = _HASHES[params["hash_algorithm"]["algorithm"].native]
        mgf_digest = _HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]
        return padding.OAEP(mgf=padding.MGF1(mgf_digest()), algorithm=digest(), label=None)
    raise EnvelopeError(f"key transport algorithm {name} is not supported")


def _layout(buf: memoryview, start: int, end: int) -> tuple[acms.RecipientInfos, acms.EncryptionAlgorithm,
                                                            list[tuple[int, int]]]:
    """(RecipientInfos, content encryption algorithm, ciphertext pieces) of a ContentInfo."""
    tag, cs, ce, _ = _element(buf, start, end)
    if tag != _SEQUENCE:
        raise EnvelopeError("not a CMS structure")
    parts = _children(buf, cs, ce, 1)
    if len(parts) < 2 or bytes(buf[parts[0][1]:parts[0][4]]) != _OID_ENVELOPED or parts[1][0] != _CTX0_CONS:
        raise EnvelopeError("not a CMS enveloped-data structure")
    inner = _children(buf, parts[1][2], parts[1][3], 2)
    if len(inner) != 1 or inner[0][0] != _SEQUENCE:
        raise EnvelopeError("not a CMS enveloped-data structure")
    # EnvelopedData: version, [0] originatorInfo OPTIONAL, recipientInfos, encryptedContentInfo, ...
    fields = [f for f in _children(buf, inner[0][2], inner[0][3], 3) if f[0] != _CTX0_CONS]
    if len(fields) < 3 or fields[1][0] != _SET or fields[2][0] != _SEQUENCE:
        raise EnvelopeError("the enveloped-data structure is malformed")
    infos = acms.RecipientInfos.load(bytes(buf[fields[1][1]:fields[1][4]]))
    eci = _children(buf, fields[2][2], fields[2][3], 4)
    if len(eci) != 3 or eci[1][0] != _SEQUENCE:
        raise EnvelopeError("the encrypted content is missing")
    algo = acms.EncryptionAlgorithm.load(bytes(buf[eci[1][1]:eci[1][4]]))
    chunks = _octet_chunks(buf, eci[2][0], eci[2][2], eci[2][3], 5)
    return infos, algo, chunks


def recipients(der: bytes) -> list[tuple[bytes, int]]:
    """(issuer Name DER, serial) of each key-transport recipient."""
    try:
        infos, _, _ = _layout(memoryview(der).cast("B"), 0, len(der))
        out = []
        for ri in infos:
            if ri.name == "ktri" and ri.chosen["rid"].name == "issuer_and_serial_number":
                ias = ri.chosen["rid"].chosen
                out.append((ias["issuer"].dump(), ias["serial_number"].native))
        return out
    except EnvelopeError:
        raise
    except Exception as exc:  # asn1crypto raises many types on corrupt input
        raise EnvelopeError(f"the encrypted structure cannot be read ({exc.__class__.__name__})") from exc


def _open(buf: memoryview, start: int, end: int,
          candidates: list[tuple[x509.Certificate, rsa.RSAPrivateKey]]
          ) -> tuple[int, Any, list[tuple[int, int]]]:
    """(candidate index, decryptor, ciphertext pieces) after the key transport step."""
    try:
        infos, algo, chunks = _layout(buf, start, end)
        ktri, index = None, -1
        for ri in infos:
            if ri.name != "ktri" or ri.chosen["rid"].name != "issuer_and_serial_number":
                continue
            ias = ri.chosen["rid"].chosen
            for i, (cert, _) in enumerate(candidates):
                if ias["serial_number"].native == cert.serial_number and \
                        ias["issuer"].dump() == cert.issuer.public_bytes():
                    ktri, index = ri.chosen, i
            if ktri is not None:
                break
        if ktri is None:
            raise EnvelopeError("the message is not encrypted to any of these certificates")
        encrypted_key, key_algo = ktri["encrypted_key"].native, ktri["key_encryption_algorithm"]
        cipher_name = algo["algorithm"].native
        if cipher_name not in _AES:
            raise EnvelopeError(f"content encryption {cipher_name} is not supported")
        iv = algo["parameters"].native
        key_padding = _key_transport_padding(key_algo)
    except EnvelopeError:
        raise
    except Exception as exc:  # asn1crypto raises many types on corrupt input
        raise EnvelopeError(f"the encrypted structure cannot be read ({exc.__class__.__name__})") from exc
    try:
        cek = candidates[index][1].decrypt(encrypted_key, key_padding)
    except ValueError as exc:
        raise EnvelopeError("the content key cannot be decrypted with this private key") from exc
    total = sum(e - s for s, e in chunks)
    if len(cek) != _AES[cipher_name] or not total or total % _BLOCK or \
            not isinstance(iv, bytes) or len(iv) != _BLOCK:
        raise EnvelopeError("the encrypted content is damaged (bad key, IV or length)")
    return index, Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor(), chunks


def _unpad(buf: bytearray | memoryview, start: int, end: int) -> int:
    """End of the content once the RFC 5652 6.3 padding (k - (l mod k) octets of that value) is off."""
    pad = buf[end - 1]
    if not 1 <= pad <= _BLOCK or bytes(buf[end - pad:end]) != bytes((pad,)) * pad or end - pad < start:
        raise EnvelopeError("the encrypted content is damaged (bad padding: wrong key or altered data)")
    return end - pad


def decrypt(der: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bytearray:
    """The content, for the recipient (cert, key). Raises EnvelopeError."""
    return decrypt_for(der, [(cert, key)])[1]


def decrypt_for(der: bytes | bytearray | memoryview,
                candidates: list[tuple[x509.Certificate, rsa.RSAPrivateKey]]) -> tuple[int, bytearray]:
    """(index of the candidate the content was encrypted to, content); `der` is not modified."""
    view = memoryview(der).cast("B")
    index, decryptor, chunks = _open(view, 0, len(view), candidates)
    total = sum(e - s for s, e in chunks)
    out = bytearray(total + _BLOCK - 1)
    target = memoryview(out)
    n = 0
    for s, e in chunks:
        n += decryptor.update_into(view[s:e], target[n:])
    tail = decryptor.finalize()  # CBC without padding: nothing left once aligned
    target[n:n + len(tail)] = tail
    n += len(tail)
    del target
    end = _unpad(out, 0, n)
    del out[end:]
    return index, out


def decrypt_in_place(buf: bytearray, candidates: list[tuple[x509.Certificate, rsa.RSAPrivateKey]],
                     start: int = 0, end: int | None = None) -> tuple[int, int, int]:
    """Decrypt the EnvelopedData held in buf[start:end] over its own ciphertext.

    Returns (candidate index, content start, content end) within `buf`; no second buffer
    of the content's size is made. A chunked (BER) ciphertext is first gathered in place
    to its first piece's position (the pieces only move towards the start).
    """
    end = len(buf) if end is None else end
    view = memoryview(buf)
    try:
        index, decryptor, chunks = _open(view, start, end, candidates)
        first = chunks[0][0]
        pos = first
        for s, e in chunks:  # X.690 8.7.3 pieces: gather them contiguously, in place
            if s != pos:
                view[pos:pos + e - s] = view[s:e]
            pos += e - s
        total = pos - first
        # OpenSSL decrypts in place when input and output start at the same address; the
        # last block goes through update() since update_into wants block-1 spare octets.
        body = total - _BLOCK
        n = decryptor.update_into(view[first:first + body], view[first:first + body + _BLOCK - 1]) if body else 0
        last = decryptor.update(bytes(view[first + body:first + total])) + decryptor.finalize()
        view[first + n:first + n + len(last)] = last
        n += len(last)
        return index, first, _unpad(view, first, first + n)
    finally:
        view.release()
