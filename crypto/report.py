"""The signature report: a structured verdict and its French rendering.

One report per message: the overall verdict, each signer (certificate subject with the
RPPS identifier, issuer, validity, chain and revocation status, signing time,
algorithms) and exactly which parts and attachments each signature covers. Stored as a
dict in Message.extra["signature_report"]; the webmail shows `render_fr()` as the
"Rapport de signature".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Overall verdicts, from good to bad. Only VALID means "valid".
VALID = "valid"
UNSIGNED = "unsigned"
UNTRUSTED = "untrusted"  # the signature is intact but the certificate path is not trusted
EXPIRED = "expired"
REVOKED = "revoked"
TAMPERED = "tampered"
INVALID = "invalid"  # malformed, bad signature, unsupported: cannot be relied upon

# Per part.
PART_INTACT = "intact"
PART_TAMPERED = "tampered"
PART_UNSIGNED = "unsigned"
PART_UNVERIFIABLE = "unverifiable"


@dataclass
class SignerReport:
    method: str  # "smime" or "pgp"
    status: str  # one of the overall verdicts above
    detail: str
    subject: str = ""
    rpps: str | None = None
    email: str | None = None
    issuer: str = ""
    serial: str = ""
    not_before: str | None = None
    not_after: str | None = None
    chain_status: str = ""
    chain: list[str] = field(default_factory=list)
    revocation: str = ""
    signing_time: str | None = None
    digest_algorithm: str = ""
    signature_algorithm: str = ""
    covers: list[str] = field(default_factory=list)  # names of the parts this signature covers


@dataclass
class PartReport:
    name: str
    kind: str  # "message" (the body as a whole) or "attachment"
    status: str
    signed_by: str | None = None
    signature_part: str | None = None


@dataclass
class SignatureReport:
    verdict: str = UNSIGNED
    summary: str = "message non signé"
    signers: list[SignerReport] = field(default_factory=list)
    parts: list[PartReport] = field(default_factory=list)
    encrypted: bool = False
    decrypted: bool | None = None
    encryption: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignatureReport:
        data = dict(data)
        signers = [SignerReport(**s) for s in data.pop("signers", [])]
        parts = [PartReport(**p) for p in data.pop("parts", [])]
        return cls(signers=signers, parts=parts, **data)

    def settle(self) -> SignatureReport:
        """Overall verdict = the worst signer or part verdict; VALID only if all are."""
        order = [VALID, UNTRUSTED, EXPIRED, REVOKED, INVALID, TAMPERED]
        if not self.signers:
            self.verdict = UNSIGNED
        else:
            self.verdict = max((s.status for s in self.signers), key=order.index)
        if any(p.status == PART_TAMPERED for p in self.parts) and self.signers:
            self.verdict = TAMPERED
        tampered = [p.name for p in self.parts if p.status == PART_TAMPERED]
        self.summary = {
            VALID: "signature valide",
            UNSIGNED: "message non signé",
            UNTRUSTED: "signature intacte mais certificat non reconnu",
            EXPIRED: "certificat du signataire expiré",
            REVOKED: "certificat du signataire révoqué",
            TAMPERED: "contenu modifié après signature" + (f" : {', '.join(tampered)}" if tampered else ""),
            INVALID: "signature illisible ou invalide",
        }[self.verdict]
        return self


_STATUS_FR = {
    VALID: "valide", UNSIGNED: "non signé", UNTRUSTED: "non reconnue (émetteur inconnu)",
    EXPIRED: "certificat expiré", REVOKED: "certificat révoqué", TAMPERED: "contenu modifié",
    INVALID: "invalide", PART_INTACT: "intègre", PART_UNVERIFIABLE: "non vérifiable",
}
_REVOCATION_FR = {"good": "non révoqué (LCR consultée)", "revoked": "RÉVOQUÉ",
                  "unknown": "non vérifié (pas de LCR)", "": "non vérifié"}
_CHAIN_FR = {"valid": "chaîne de confiance valide", "expired": "certificat expiré",
             "not-yet-valid": "certificat pas encore valide", "revoked": "certificat révoqué",
             "unknown-issuer": "autorité de certification inconnue",
             "bad-usage": "usage du certificat incorrect", "bad-chain": "chaîne de certificats invalide",
             "": "non évaluée"}


def _date(value: str | None) -> str:
    if not value:
        return "inconnue"
    return value[:19].replace("T", " à ") + " UTC"


# Details the verifiers write in French already; any other (English, from a library or
# an exception) is replaced by one said in French from the signer's structured fields.
_FRENCH_DETAILS = ("signature vérifiée", "signature OpenPGP vérifiée", "message illisible")


def _detail_fr(s: SignerReport) -> str:
    """The signer's detail in French: the doctor reads this report, in one language."""
    if s.detail.startswith(_FRENCH_DETAILS):
        return s.detail
    if s.status == TAMPERED:
        return "le contenu ne correspond plus à la signature"
    if s.status == REVOKED:
        return "le certificat du signataire a été révoqué par son autorité"
    if s.status == EXPIRED:
        if s.chain_status == "not-yet-valid":
            return "le certificat du signataire n'est pas encore valide"
        if s.chain_status == "expired":
            return f"le certificat du signataire a expiré le {_date(s.not_after)}"
        return "le message a été signé hors de la période de validité du certificat"
    if s.status == UNTRUSTED:
        if s.detail.startswith("the certificate is for"):
            return f"le certificat est celui de {s.email}, pas celui de l'expéditeur"
        if "in the future" in s.detail:
            return "la date de signature est dans le futur"
        if s.method == "pgp":
            return "la clé OpenPGP du signataire n'est pas connue ici"
        return _CHAIN_FR.get(s.chain_status, "certificat non reconnu")
    if s.status == INVALID:
        return "signature illisible, malformée ou d'un algorithme non pris en charge"
    return _STATUS_FR.get(s.status, s.status)


def identifier_label(value: str) -> str:
    """What kind of national identifier a certificate carries in its serialNumber: RPPS
    (11 digits; "8" + RPPS in the CPS cards' 12-character form) or ADELI (9 characters;
    "0" + ADELI in the 10-character form) [M: the ANS "type d'identifiant national"
    prefixes]; anything else is named plainly."""
    v = value.strip()
    if (len(v) == 11 and v.isdigit()) or (len(v) == 12 and v.startswith("8") and v.isdigit()):
        return "Identifiant RPPS"
    if len(v) == 9 or (len(v) == 10 and v.startswith("0")):
        return "Identifiant ADELI"
    return "Identifiant"


def overview_fr(report: SignatureReport | dict[str, Any]) -> list[tuple[str, str]]:
    """The report's first lines as (label, value): the verdict, the encryption."""
    r = SignatureReport.from_dict(report) if isinstance(report, dict) else report
    summary = r.summary
    if r.decrypted is False:  # the summary is then the decryption error, in English
        summary = "message chiffré que le serveur ne peut pas déchiffrer (aucune clé ne convient)"
    rows = [("Verdict", f"{_STATUS_FR.get(r.verdict, r.verdict).upper()} ({summary})")]
    if r.encrypted:
        rows.append(("Chiffrement", "message chiffré" + (f" ({r.encryption})" if r.encryption else "") + (
            ", déchiffré par le serveur" if r.decrypted else ", non déchiffré" if r.decrypted is False else "")))
    return rows


def signer_title_fr(index: int, s: SignerReport) -> str:
    return f"Signature {index} ({'S/MIME' if s.method == 'smime' else 'OpenPGP'}) : {_STATUS_FR.get(s.status, s.status)}"


def signer_fields_fr(s: SignerReport) -> list[tuple[str, str]]:
    """One signer as (label, value) rows: the webmail's table and render_fr's lines."""
    rows = [("Détail", _detail_fr(s)), ("Signataire", s.subject or "inconnu")]
    if s.rpps:
        rows.append((identifier_label(s.rpps), s.rpps))
    if s.email:
        rows.append(("Adresse", s.email))
    rows += [("Émetteur", s.issuer or "inconnu"),
             ("Numéro de série", s.serial or "inconnu"),
             ("Validité", f"du {_date(s.not_before)} au {_date(s.not_after)}"),
             ("Chaîne de certification", _CHAIN_FR.get(s.chain_status, s.chain_status)),
             ("Révocation", _REVOCATION_FR.get(s.revocation, s.revocation)),
             ("Date de signature", _date(s.signing_time)),
             ("Algorithmes", f"{s.digest_algorithm} / {s.signature_algorithm}")]
    if s.covers:
        rows.append(("Couvre", ", ".join(s.covers)))
    return rows


def part_fr(p: PartReport) -> tuple[str, str, str]:
    """(name, kind, status) of one part, in French."""
    kind = "pièce jointe" if p.kind == "attachment" else "message"
    return p.name, kind, _STATUS_FR.get(p.status, p.status) + (
        f", signée par {p.signed_by}" if p.signed_by and p.status == PART_INTACT else "")


def render_fr(report: SignatureReport | dict[str, Any]) -> str:
    """The "Rapport de signature" shown to the doctor (plain text, French only)."""
    r = SignatureReport.from_dict(report) if isinstance(report, dict) else report
    lines = ["Rapport de signature", "===================="]
    lines += [f"{label} : {value}" for label, value in overview_fr(r)]
    for i, s in enumerate(r.signers, 1):
        lines += ["", signer_title_fr(i, s)]
        lines += [f"  {label} : {value}" for label, value in signer_fields_fr(s)]
    if r.parts:
        lines += ["", "Parties du message :"]
        for p in r.parts:
            name, kind, status = part_fr(p)
            lines.append(f"  - {name} ({kind}) : {status}")
    return "\n".join(lines) + "\n"
