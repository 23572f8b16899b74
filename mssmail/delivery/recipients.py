"""What a sender can know about a recipient before sending, and what its own policy is.

`recipient_status(store, config, address)` answers the questions the webmail shows
while a doctor types an address ("dans l'espace de confiance", "accepte la
dématérialisation", "certificat de chiffrement trouvé"), with the very code submission
and crypto decide with: `mssmail.smtp.policy.classify_recipient` (the space of trust),
the directory (`directory.store`) and `crypto.publication.find_encryption_certificate`
(our PKI, else the directory's published certificates, validated). So what the page
says before "Envoyer" is what `submit()` will do.

`sender_policy(store, config, sender)` is the sign/encrypt policy of a sending mailbox
(`crypto.mailflow.policy_for`), which the "Signer"/"Chiffrer" boxes show ticked and
locked when it demands them (`SubmitOptions` may only raise it).

Blocking functions (store and directory reads, certificate validation): call them on
the store's threads (`store.run`).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mssmail.delivery.compose import is_patient_address, valid_address
from mssmail.smtp import policy

if TYPE_CHECKING:
    from mssmail.config import Config
    from mssmail.store.service import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipientStatus:
    address: str
    valid: bool  # an address at all
    trusted: bool  # local or in a domain of the space of trust: submission accepts it
    local: bool  # a domain of this server
    exists: bool | None  # local only: a mailbox of that address is here (None: not local)
    listed: bool  # the directory has an entry for it (listed or on the liste rouge)
    dematerialised: bool | None  # the entry accepts dematerialised documents (None: no entry)
    certificate: bool  # a valid encryption certificate was found (our PKI or the directory)
    display_name: str = ""
    profession: str = ""
    structure: str = ""
    city: str = ""

    @property
    def patient(self) -> bool:
        """A patient's address (Mon Espace Santé): it accepts 25 MB at most, and the
        sender may block the patient's answer."""
        return is_patient_address(self.address)

    @property
    def refused(self) -> bool:
        """Submission will refuse this recipient."""
        return not self.valid or not self.trusted or self.exists is False


@dataclass(frozen=True)
class SenderPolicy:
    sign: bool
    encrypt: str  # never | when-possible | required
    can_sign: bool  # the server holds a signature key for the sender


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:  # a build without the directory or crypto
        return None


def directory_entry(store: Store, address: str) -> Any:
    """The directory's entry of `address` (liste rouge included: it still receives mail),
    or None."""
    dstore = _optional("directory.store")
    filters = _optional("directory.filters")
    if dstore is None or filters is None:
        return None
    found = dstore.search(store, filters.Compare("mail", "=", address), include_unlisted=True, limit=1,
                          address=address)
    return found[0] if found else None


def recipient_status(store: Store, config: Config, address: str, *, keystore: Any = None) -> RecipientStatus:
    """Everything the sender may know of `address` (see the module docstring)."""
    address = address.strip().lower()
    if not valid_address(address):
        return RecipientStatus(address, False, False, False, None, False, None, False)
    local_domains = {d.lower() for d in store.local_domains()} | {config.server.domain.lower()}
    route = policy.classify_recipient(address, local_domains, config.trust_domains())
    local = route is policy.Route.LOCAL
    exists = store.get_mailbox(address) is not None if local else None
    entry = directory_entry(store, address)
    certificate = False
    if route is not policy.Route.REFUSED:
        certificate = has_encryption_certificate(store, config, address, keystore=keystore)
    return RecipientStatus(
        address, True, route is not policy.Route.REFUSED, local, exists, entry is not None,
        None if entry is None else bool(entry.dematerialised), certificate,
        display_name=(entry.display_name or " ".join(filter(None, (entry.given_name, entry.family_name))))
        if entry else "",
        profession=(entry.profession_label or "") if entry else "",
        structure=(entry.structure or "") if entry else "",
        city=(entry.city or "") if entry else "")


def has_encryption_certificate(store: Store, config: Config, address: str, *, keystore: Any = None) -> bool:
    context = _optional("crypto.context")
    publication = _optional("crypto.publication")
    if context is None or publication is None:
        return False
    ks = keystore or context.keystore_for(config)
    try:
        cert, _why = publication.find_encryption_certificate(ks, context.trust_for(config, ks), address, store)
    except Exception:  # a broken PKI directory must not break the compose page
        log.exception("encryption certificate lookup failed for %s", address)
        return False
    return cert is not None


def sender_policy(store: Store, config: Config, sender: str, *, keystore: Any = None) -> SenderPolicy:
    """The sign/encrypt policy of `sender` (server settings, overridden per mailbox)."""
    mailflow = _optional("crypto.mailflow")
    context = _optional("crypto.context")
    if mailflow is None or context is None:
        return SenderPolicy(False, "never", False)
    found = mailflow.policy_for(config, store, sender)
    ks = keystore or context.keystore_for(config)
    signer = ks.get(sender, "signature")
    return SenderPolicy(found.sign, found.encrypt, signer is not None and signer.key is not None)
