"""CMS EnvelopedData decryption (RFC 5652 section 6, RFC 3565 AES, RFC 8017 key transport).

cryptography's `pkcs7_decrypt_der` accepts RSA PKCS#1 v1.5 key transport only and makes
several copies of the content; here asn1crypto reads the structure and cryptography does
the RSA (PKCS#1 v1.5 or OAEP, RFC 3560) and AES-CBC work, decrypting into one buffer.
"""

from __future__ import annotations

from asn1crypto import cms as acms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
           "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_AES = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}


class EnvelopeError(ValueError):
    """Why an EnvelopedData cannot be decrypted, in one sentence."""


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


def recipients(der: bytes) -> list[tuple[bytes, int]]:
    """(issuer Name DER, serial) of each key-transport recipient."""
    info = acms.ContentInfo.load(der)
    if info["content_type"].native != "enveloped_data":
        raise EnvelopeError("not a CMS enveloped-data structure")
    out = []
    for ri in info["content"]["recipient_infos"]:
        if ri.name == "ktri" and ri.chosen["rid"].name == "issuer_and_serial_number":
            ias = ri.chosen["rid"].chosen
            out.append((ias["issuer"].dump(), ias["serial_number"].native))
    return out


def decrypt(der: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bytearray:
    """The content, for the recipient (cert, key). Raises EnvelopeError."""
    return decrypt_for(der, [(cert, key)])[1]


def decrypt_for(der: bytes, candidates: list[tuple[x509.Certificate, rsa.RSAPrivateKey]]
                ) -> tuple[int, bytearray]:
    """(index of the candidate the content was encrypted to, content); one parse only."""
    try:
        # asn1crypto keeps a copy of the contents at each nesting level: walk down one
        # level at a time and drop the level above, so at most two copies live at once.
        info = acms.ContentInfo.load(der)
        if info["content_type"].native != "enveloped_data":
            raise EnvelopeError("not a CMS enveloped-data structure")
        env = info["content"]
        del info
        ktri, index = None, -1
        for ri in env["recipient_infos"]:
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
        eci = env["encrypted_content_info"]
        del env, ktri
        cipher_name = eci["content_encryption_algorithm"]["algorithm"].native
        if cipher_name not in _AES:
            raise EnvelopeError(f"content encryption {cipher_name} is not supported")
        iv = eci["content_encryption_algorithm"]["parameters"].native
        ciphertext = eci["encrypted_content"].native
        del eci
    except EnvelopeError:
        raise
    except Exception as exc:  # asn1crypto raises many types on corrupt input
        raise EnvelopeError(f"the encrypted structure cannot be read ({exc.__class__.__name__})") from exc
    try:
        cek = candidates[index][1].decrypt(encrypted_key, _key_transport_padding(key_algo))
    except ValueError as exc:
        raise EnvelopeError("the content key cannot be decrypted with this private key") from exc
    if len(cek) != _AES[cipher_name] or not ciphertext or len(ciphertext) % 16 or len(iv or b"") != 16:
        raise EnvelopeError("the encrypted content is damaged (bad key, IV or length)")
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    buf = bytearray(len(ciphertext) + 15)
    n = decryptor.update_into(ciphertext, buf)
    del ciphertext
    tail = decryptor.finalize()
    buf[n:n + len(tail)] = tail
    n += len(tail)
    del buf[n:]
    # RFC 5652 6.3 padding: k - (l mod k) octets each of that value.
    pad = buf[-1] if buf else 0
    if not 1 <= pad <= 16 or buf[-pad:] != bytes([pad]) * pad:
        raise EnvelopeError("the encrypted content is damaged (bad padding: wrong key or altered data)")
    del buf[-pad:]
    return index, buf
