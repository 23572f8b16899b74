"""Crypto in the mail flow: sign/encrypt on submission, verify on reception, decrypt on read.

Policy: [crypto] sign_outgoing (bool) and encrypt_outgoing ("never" | "when-possible" |
"required"), overridden per mailbox by Mailbox.settings {"sign_outgoing": ...,
"encrypt_outgoing": ...}. Reception: the signature report goes to Message.extra
["signature_report"] and an Authentication-Results header (RFC 8601, smime method of
RFC 7281) is prepended; the stored bytes stay as received (still encrypted), and the
store's view filter decrypts for readers whose key the server holds.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509

from crypto import analyse, smime
from crypto import report as rep
from crypto.authres import authserv_id as authserv_id  # re-exported: part of this module's API
from crypto.authres import claims_authserv_id as claims_authserv_id
from crypto.authres import strip_our_results
from crypto.context import keystore_for, trust_for
from crypto.keystore import Credential, KeyStore
from crypto.pgp import Pgp
from crypto.publication import find_encryption_certificate
from mssmail import mime
from mssmail.mime.headers import header_length

if TYPE_CHECKING:
    from mssmail.store.service import Store

log = logging.getLogger(__name__)

# How long the submission filter believes a sender's signing/encryption policy.
POLICY_CACHE_SECONDS = 5.0
POLICY_CACHE_SIZE = 10_000

# RFC 3463 / RFC 5321 reply for a recipient we must encrypt to but cannot.
REPLY_NO_CERTIFICATE = (550, "5.7.1 No encryption certificate for {rcpt}: encryption is required")
REPLY_NO_SIGNING_KEY = (550, "5.7.1 No signature key held by the server for {sender}")
# RFC 3463 5.7.1: the policy demands a signature and the sender's certificate may not sign.
REPLY_SIGNER_UNUSABLE = (550, "5.7.1 The signature certificate of {sender} is {why}: not sent; "
                              "ask the administrator for a new certificate")

AR_HEADER = "Authentication-Results"
# RFC 7281 section 3: smime results.
AR_RESULT = {rep.VALID: "pass", rep.TAMPERED: "fail", rep.INVALID: "fail",
             rep.UNTRUSTED: "policy", rep.EXPIRED: "policy", rep.REVOKED: "policy"}


class PolicyRefusal(Exception):
    """The message cannot leave as the policy demands: (code, text) for the SMTP reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


@dataclass
class Policy:
    sign: bool
    encrypt: str  # never | when-possible | required


def mailbox_settings(store: Store | None, address: str) -> dict[str, Any]:
    """A local mailbox's settings through the store's validated API
    (`Store.mailbox_settings`, read as the server component `system:crypto`), {} for
    any other address: `sign_outgoing` and `encrypt_outgoing` are its policy."""
    if store is None:
        return {}
    from mssmail.store.actors import Actor
    from mssmail.store.errors import MailboxNotFound

    try:
        return store.mailbox_settings(Actor.system("crypto"), address)
    except MailboxNotFound:
        return {}


def policy_for(config: Any, store: Store | None, sender: str) -> Policy:
    settings = mailbox_settings(store, sender)
    sign = settings.get("sign_outgoing", config.crypto.sign_outgoing)
    encrypt = settings.get("encrypt_outgoing", config.crypto.encrypt_outgoing)
    if encrypt not in ("never", "when-possible", "required"):
        encrypt = config.crypto.encrypt_outgoing
    return Policy(bool(sign), encrypt)


def recipient_certificate(ks: KeyStore, address: str, store: Any,
                          trust: smime.Trust) -> x509.Certificate | None:
    """The certificate to encrypt to: our PKI's, else the directory's, valid and trusted."""
    cert, why = find_encryption_certificate(ks, trust, address, store)
    if cert is None and why != "no encryption certificate":
        log.info("no usable encryption certificate for %s: %s", address, why)
    return cert


def protect_outgoing(config: Any, store: Any, sender: str, recipients: list[str], message: bytes,
                     ks: KeyStore | None = None, options: Any = None, policy: Policy | None = None) -> bytes:
    """Apply the signing/encryption policy to a submitted message (raises PolicyRefusal).
    `options` (mssmail.delivery.filters.SubmitOptions: what the sender asked for) may
    only raise the policy, never lower it. `policy`: the sender's, when the caller
    knows it already (else read from its mailbox settings)."""
    policy = policy or policy_for(config, store, sender)
    if options is not None:
        policy = Policy(*options.raise_policy(policy.sign, policy.encrypt))
    if not policy.sign and policy.encrypt == "never":
        return message
    if smime.is_smime(message) is not None:
        return message  # the client protected it already
    ks = ks or keystore_for(config)
    signer = None
    if policy.sign:
        signer = ks.get(sender, "signature")
        if signer is None or signer.key is None:
            code, text = REPLY_NO_SIGNING_KEY
            raise PolicyRefusal(code, text.format(sender=sender))
        signer = _usable_signer(config, sender, signer, ks)
        if signer is None and policy.encrypt == "never":
            return message
    certs: list[x509.Certificate] = []
    if policy.encrypt != "never":
        missing = []
        trust = trust_for(config, ks)
        for rcpt in recipients:
            cert = recipient_certificate(ks, rcpt, store, trust)
            if cert is None:
                missing.append(rcpt)
            elif cert not in certs:
                certs.append(cert)
        if missing and policy.encrypt == "required":
            code, text = REPLY_NO_CERTIFICATE
            raise PolicyRefusal(code, text.format(rcpt=", ".join(missing)))
        if missing:  # when-possible: all recipients must read it, so send it in clear
            certs = []
        if certs:
            own = ks.get(sender, "encryption")  # so the sender can read the Sent copy
            if own is not None and own.certificate not in certs:
                certs.append(own.certificate)
    if signer is None and not certs:
        return message  # nothing left to do (an unusable signer, no one to encrypt to)
    return analyse.protect_message(message, signer, certs or None,
                                   per_attachment=config.crypto.sign_attachments)


def _usable_signer(config: Any, sender: str, signer: Any, ks: KeyStore) -> Any:
    """The signer, or None (send unsigned) when its certificate is revoked or expired and
    `[crypto] unusable_signer` is "send-unsigned"; PolicyRefusal when it is "refuse".
    Either way the log says so (`signing.refused`); a refusal also tells the sender."""
    from crypto.signerstatus import serial_of, unusable_reason
    from mssmail import logs

    why = unusable_reason(ks, signer.certificate)
    if why is None:
        return signer
    action = config.crypto.unusable_signer
    logs.event(logs.SIGNING_REFUSED, level=logging.WARNING, sender=sender,
               serial=serial_of(signer.certificate), reason=f"signature certificate {why}",
               action="unsigned" if action == "send-unsigned" else "refused")
    if action == "send-unsigned":
        return None
    code, text = REPLY_SIGNER_UNUSABLE
    raise PolicyRefusal(code, text.format(sender=sender, why=why))


# --- reception ---------------------------------------------------------------------------

def authentication_results(authserv_id: str, report: rep.SignatureReport) -> str | None:
    """The header value (RFC 8601 2.2, RFC 7281 3), None for an unsigned message."""
    smime_signers = [s for s in report.signers if s.method == "smime"]
    pgp_signers = [s for s in report.signers if s.method == "pgp"]
    results = []
    if report.encrypted and report.decrypted is False and not report.signers:
        results.append("smime=neutral (encrypted to a key this server does not hold)")
    if smime_signers:
        worst = max(smime_signers, key=lambda s: list(AR_RESULT).index(s.status) if s.status in AR_RESULT else 0)
        result = AR_RESULT.get(report.verdict if report.verdict in AR_RESULT else worst.status, "neutral")
        props = []
        if worst.email:
            props.append(f"body.smime-identifier={worst.email}")
        if worst.serial:
            props.append(f"body.smime-serial={worst.serial.upper()}")
        if worst.issuer:
            props.append(f'body.smime-issuer="{worst.issuer.replace(chr(34), "")}"')
        results.append(" ".join([f"smime={result}", *props]) + f" ({report.summary})")
    if pgp_signers:
        s = pgp_signers[0]
        results.append(f"x-pgp={AR_RESULT.get(s.status, 'neutral')} body.x-pgp-key={s.serial or 'unknown'}")
    if not results:
        return None
    return f"{authserv_id};\r\n\t" + ";\r\n\t".join(results)


# Media types of RFC 8551 (application/pkcs7-*, application/x-pkcs7-*) and RFC 3156
# (application/pgp-*), and inline PGP armour: without any, there is nothing to verify.
# Whole media types, not bare "pgp": three letters turn up by chance in about one
# base64 attachment of 10 KB in four, and each such message paid a full analysis.
_PROTECTION_MARKERS = (b"application/pkcs7-", b"application/x-pkcs7-", b"application/pgp-",
                       b"-----begin pgp ", b".p7m", b".p7s")


# The markers regrouped by shared prefix, so that looks_protected scans the message
# three times, not six (a test checks that every marker is still found).
_MEDIA_TYPE_MARKERS = tuple(marker[len(b"application/"):] for marker in _PROTECTION_MARKERS
                            if marker.startswith(b"application/"))
_EXTENSION_MARKERS = tuple(marker[len(b".p7"):] for marker in _PROTECTION_MARKERS if marker.startswith(b".p7"))


def _follows(lowered: bytes, prefix: bytes, endings: tuple[bytes, ...]) -> bool:
    """Whether some occurrence of prefix in lowered is followed by one of endings.

    Searched backwards: rfind tests a needle's first byte, and "." or "a" are rarer in
    base64 bodies than the "7" or "/" that find tests first (twice as fast on 10 KB).
    """
    at = lowered.rfind(prefix)
    while at >= 0:
        if lowered.startswith(endings, at + len(prefix)):
            return True
        at = lowered.rfind(prefix, 0, at + len(prefix) - 1)
    return False


def looks_protected(message: bytes) -> bool:
    """Cheap pre-check so that plain mail does not pay for a full MIME analysis.

    True exactly when a _PROTECTION_MARKERS entry occurs in the message, in any case
    (inline armour sits in bodies, so bodies are searched too), but with three searches
    of the lowered message instead of six: under half the time on a 10 KB multipart.
    """
    lowered = message.lower()
    return (_follows(lowered, b"application/", _MEDIA_TYPE_MARKERS)
            or _follows(lowered, b".p7", _EXTENSION_MARKERS)
            or lowered.rfind(b"-----begin pgp ") >= 0)


def check_incoming(config: Any, recipients: list[str], message: bytes,
                   ks: KeyStore | None = None) -> tuple[bytes, dict[str, Any]]:
    """(message with our Authentication-Results prepended, extra for Message.extra)."""
    authserv_id = config.crypto.authserv_id or config.hostname
    # The listeners stripped what the peer sent and put their own trace and sender
    # verdict on top (mssmail.smtp.handlers): those stay.
    out = strip_our_results(message, authserv_id, below_first_received=True)
    if not config.crypto.verify_incoming or not looks_protected(message):
        return out, {}
    store = ks or keystore_for(config)

    def creds() -> list[Credential]:  # only for an encrypted message (analyse_message)
        return [c for c in (store.get(r, "encryption") for r in recipients) if c is not None]

    header_block, _ = mime.split_entity(out)
    pgp = Pgp(config.data_dir / "gnupg") if b"application/pgp-" in header_block.lower() else None
    report, _ = analyse.analyse_message(message, trust_for(config, store), creds, pgp)
    value = authentication_results(authserv_id, report)
    extra: dict[str, Any] = {}
    if report.signers or report.encrypted:
        extra["signature_report"] = report.to_dict()
    if value is not None:
        out = f"{AR_HEADER}: {value}\r\n".encode() + out
    return out, extra


def view_filter_for(config: Any, ks: KeyStore | None = None) -> Any:
    """A store view filter: decrypts S/MIME for a reader whose encryption key we hold."""
    keystore = ks or keystore_for(config)

    def decrypt_on_read(address: str, raw: bytes, extra: dict[str, Any]) -> bytes:
        if not _may_be_enveloped(raw) or smime.is_smime(raw) != "enveloped":
            return raw
        cred = keystore.get(address, "encryption")
        if cred is None or cred.key is None:
            return raw
        try:
            clear = smime.decrypt_message(raw, [cred])
        except smime.SmimeError:
            return raw  # not for this reader: they see what was received
        header_block, body = mime.split_entity(clear)
        return header_block + b"X-MSS-Decrypted: S/MIME, by the server for " + address.encode() + b"\r\n\r\n" + body

    return decrypt_on_read


def _may_be_enveloped(raw: bytes) -> bool:
    """False when the header block cannot name application/(x-)pkcs7-mime: two `find`s
    (the header block as mssmail.mime cuts it) instead of parsing the headers of every
    message a reader opens. That block is never shorter than the one `smime.is_smime`
    reads after canonicalisation, where a bare CR can only end the block sooner."""
    return b"pkcs7-mime" in raw[:header_length(raw)].lower()


def _reject(code: int, text: str) -> Exception:
    """mssmail.delivery.filters.Reject(code, text) when that module exists, else PolicyRefusal."""
    try:
        hooks = importlib.import_module("mssmail.delivery.filters")
    except ModuleNotFoundError:
        return PolicyRefusal(code, text)
    reject = getattr(hooks, "Reject", None)
    return reject(code, text) if reject is not None else PolicyRefusal(code, text)


def submission_filter(config: Any, store: Any) -> Any:
    """filter(sender, recipients, data, options) -> data, raising Reject(550, "5.7.1 ...") per
    policy; `options` (the sender's SubmitOptions) only raise it."""
    ks = keystore_for(config)
    # sender -> (believed until, policy): one settings read per sender every few seconds,
    # not one per message (the submission hot path); a changed setting applies within
    # POLICY_CACHE_SECONDS.
    policies: dict[str, tuple[float, Policy]] = {}

    def policy_of(sender: str) -> Policy:
        now = time.monotonic()
        known = policies.get(sender)
        if known is None or known[0] <= now:
            if len(policies) >= POLICY_CACHE_SIZE:
                policies.clear()
            known = policies[sender] = (now + POLICY_CACHE_SECONDS, policy_for(config, store, sender))
        return known[1]

    def crypto_submission(sender: str, recipients: list[str], data: bytes, options: Any = None) -> bytes:
        try:
            return protect_outgoing(config, store, sender, list(recipients), data, ks, options,
                                    policy=policy_of(sender))
        except PolicyRefusal as refusal:
            raise _reject(refusal.code, refusal.text) from None

    return crypto_submission


def inbound_filter(config: Any) -> Any:
    """filter(sender, recipients, data) -> (data, extra): verdict header + report for Message.extra."""
    ks = keystore_for(config)

    def crypto_inbound(sender: str, recipients: list[str], data: bytes) -> tuple[bytes, dict[str, Any]]:
        return check_incoming(config, list(recipients), data, ks)

    return crypto_inbound


def install(store: Any, config: Any) -> list[str]:
    """Register the view filter on `store`, and the delivery filters
    (mssmail/delivery/filters.py: `submission_filters`, `inbound_filters`)."""
    lines = []
    if not any(getattr(f, "__name__", "") == "decrypt_on_read" for f in store.view_filters):
        store.view_filters.append(view_filter_for(config))
        lines.append("crypto: decrypt-on-read view filter installed")
    try:
        hooks = importlib.import_module("mssmail.delivery.filters")
    except ModuleNotFoundError:
        return lines
    for name, make in (("submission_filters", lambda: submission_filter(config, store)),
                       ("inbound_filters", lambda: inbound_filter(config))):
        registry = getattr(hooks, name, None)
        if isinstance(registry, list):
            registry.append(make())
            lines.append(f"crypto: registered in mssmail.delivery.filters.{name}")
    return lines


register = install
