"""A mailbox's own settings (`Mailbox.settings`), through one validated, audited API.

What a doctor sets in the webmail's "Options" and what the server's own code reads:
- `signature`: text added under the messages the webmail writes (at most 2,000
  characters);
- `out_of_office`: `{"enabled", "start", "end", "subject", "text"}`: the delivery
  answers once per correspondent and per 7 days while enabled and today is between the
  dates (`mssmail.delivery.automail`, RFC 3834);
- `forward`: `{"addresses", "keep_copy"}`: every message delivered to the INBOX is
  sent on to these addresses (all in the space of trust), the original kept or not;
- `sign_outgoing` (bool), `encrypt_outgoing` ("never" | "when-possible" | "required"):
  the crypto policy of this mailbox over `[crypto]` (`crypto.mailflow.policy_for`).

Every value is checked here, whoever writes it (webmail, CLI): an unknown key, a wrong
type, a date that is not one, an address outside the space of trust is refused with
`SettingsError` (a French sentence a page can show as it is) and nothing is written.
Changes are audited (`admin`, op `settings.update`, the keys changed, never their
text). Reading is not audited: it is the mailbox's configuration, not its mail.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mssmail import audit
from mssmail.store.actors import Actor, ActorKind, as_actor
from mssmail.store.addresses import domain_of, normalize
from mssmail.store.errors import AccessDenied, InvalidAddress, MailboxNotFound, StoreError
from mssmail.store.models import AutoReply, Domain, Mailbox

if TYPE_CHECKING:
    from mssmail.store.service import Store

MAX_SIGNATURE = 2000
MAX_SUBJECT = 200
MAX_TEXT = 4000
MAX_FORWARDS = 5
ENCRYPT_VALUES = ("never", "when-possible", "required")
KEYS = ("signature", "out_of_office", "forward", "sign_outgoing", "encrypt_outgoing")
OPERATOR_KEYS = ("sign_outgoing", "encrypt_outgoing")
# RFC 3834 section 2: "a response [...] SHOULD NOT be sent more often than once every
# several days [...] 7 days is RECOMMENDED" to one correspondent.
REPLY_INTERVAL = timedelta(days=7)


REPLY_KIND = "mailbox.autoreply"
FORWARD_KIND = "mailbox.forward"


class SettingsError(StoreError):
    """A setting refused; the message is the French sentence shown to the user."""


def _text(value: Any, limit: int, what: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{what} : un texte est attendu.")
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if len(value) > limit:
        raise SettingsError(f"{what} : {limit} caractères au plus ({len(value)} saisis).")
    if any(not (c.isprintable() or c in "\n\t") for c in value):
        raise SettingsError(f"{what} : caractères de contrôle refusés.")
    return str(value)


def _day(value: Any, what: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) != 10:
        raise SettingsError(f"{what} : date invalide (AAAA-MM-JJ).")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise SettingsError(f"{what} : date invalide (AAAA-MM-JJ).") from None


def _out_of_office(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SettingsError("Réponse d'absence : valeur invalide.")
    unknown = set(value) - {"enabled", "start", "end", "subject", "text"}
    if unknown:
        raise SettingsError(f"Réponse d'absence : champ inconnu {sorted(unknown)[0]!r}.")
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        raise SettingsError("Réponse d'absence : « activée » est oui ou non.")
    start = _day(value.get("start"), "Début de l'absence")
    end = _day(value.get("end"), "Fin de l'absence")
    if start and end and start > end:
        raise SettingsError("Réponse d'absence : la date de fin est avant la date de début.")
    subject = _text(value.get("subject", ""), MAX_SUBJECT, "Objet de la réponse d'absence").strip()
    if "\n" in subject:
        raise SettingsError("Objet de la réponse d'absence : une seule ligne.")
    text = _text(value.get("text", ""), MAX_TEXT, "Texte de la réponse d'absence")
    if enabled and not text.strip():
        raise SettingsError("Réponse d'absence : le texte est obligatoire pour l'activer.")
    return {"enabled": enabled, "start": start, "end": end, "subject": subject, "text": text}


def _forward(value: Any, owner: str, trusted: Collection[str] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SettingsError("Transfert : valeur invalide.")
    unknown = set(value) - {"addresses", "keep_copy"}
    if unknown:
        raise SettingsError(f"Transfert : champ inconnu {sorted(unknown)[0]!r}.")
    raw = value.get("addresses", [])
    if not isinstance(raw, list | tuple) or any(not isinstance(a, str) for a in raw):
        raise SettingsError("Transfert : une liste d'adresses est attendue.")
    addresses: list[str] = []
    for entry in raw:
        if not entry.strip():
            continue
        try:
            address = normalize(entry)
        except InvalidAddress:
            raise SettingsError(f"Transfert : « {entry.strip()[:100]} » n'est pas une adresse valide.") from None
        if address == owner:
            raise SettingsError("Transfert : une boîte ne peut pas se transférer ses propres messages.")
        if trusted is not None and domain_of(address) not in trusted:
            raise SettingsError(f"Transfert : {address} n'est pas dans l'espace de confiance MSSanté ; "
                                "le transfert n'y est pas permis.")
        if address not in addresses:
            addresses.append(address)
    if len(addresses) > MAX_FORWARDS:
        raise SettingsError(f"Transfert : {MAX_FORWARDS} adresses au plus.")
    keep = value.get("keep_copy", True)
    if not isinstance(keep, bool):
        raise SettingsError("Transfert : « garder une copie » est oui ou non.")
    if not addresses:
        return None
    return {"addresses": addresses, "keep_copy": keep}


def validate(changes: Mapping[str, Any], owner: str, trusted: Collection[str] | None) -> dict[str, Any]:
    """The changes, checked and normalised; a value None removes the key."""
    unknown = [k for k in changes if k not in KEYS]
    if unknown:
        raise SettingsError(f"Réglage inconnu : {unknown[0]!r} (connus : {', '.join(KEYS)}).")
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "signature":
            clean[key] = None if value is None else (_text(value, MAX_SIGNATURE, "Signature").rstrip() or None)
        elif key == "out_of_office":
            clean[key] = _out_of_office(value)
        elif key == "forward":
            clean[key] = _forward(value, owner, trusted)
        elif key == "sign_outgoing":
            if value is not None and not isinstance(value, bool):
                raise SettingsError("Signature des messages envoyés : oui ou non.")
            clean[key] = value
        elif key == "encrypt_outgoing":
            if value is not None and value not in ENCRYPT_VALUES:
                raise SettingsError(f"Chiffrement des messages envoyés : {', '.join(ENCRYPT_VALUES)}.")
            clean[key] = value
    return clean


def out_of_office_active(settings: Mapping[str, Any], today: date) -> bool:
    """Whether the mailbox answers today (dates included; a missing one is open)."""
    ooo = settings.get("out_of_office")
    if not isinstance(ooo, Mapping) or not ooo.get("enabled") or not ooo.get("text"):
        return False
    start, end = ooo.get("start"), ooo.get("end")
    day = today.isoformat()
    return not ((start and day < start) or (end and day > end))


def forward_addresses(settings: Mapping[str, Any]) -> list[str]:
    forward = settings.get("forward")
    if not isinstance(forward, Mapping):
        return []
    return [a for a in forward.get("addresses", []) if isinstance(a, str)]


def parsed(value: Any) -> dict[str, Any]:
    """A settings column as the DBAPI hands it over (JSON text on SQLite's raw cursor)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def automail_jobs(connection: Connection, placed: Sequence[tuple[Any, str, int, str]],
                  today: date | None = None) -> int:
    """In a delivery's transaction: a `mailbox.autoreply` job per INBOX delivery to a
    mailbox whose out-of-office is active today (not for a null sender: RFC 3834 2),
    and a `mailbox.forward` job per delivery to a mailbox that forwards.
    `placed`: (the mailbox's settings column, address, message row id, envelope sender).
    The worker (`mssmail.delivery.automail`) checks everything else after the commit."""
    from mssmail.store.jobs import NewJob, enqueue, job_key

    today = today or datetime.now(UTC).date()
    jobs: list[NewJob] = []
    for raw, address, row_id, sender in placed:
        if not raw:
            continue
        settings = parsed(raw)
        if not settings:
            continue
        null = sender.strip() in ("", "<>")
        # Paris is at most a day off UTC: the worker checks the day again in Paris.
        if not null and (out_of_office_active(settings, today) or out_of_office_active(settings, today + timedelta(days=1))
                         or out_of_office_active(settings, today - timedelta(days=1))):
            jobs.append(NewJob(kind=REPLY_KIND, key=job_key(REPLY_KIND, address, row_id),
                               payload={"sender": sender}, mailbox=address, message_id=row_id))
        if forward_addresses(settings):
            jobs.append(NewJob(kind=FORWARD_KIND, key=job_key(FORWARD_KIND, address, row_id),
                               payload={"sender": sender}, mailbox=address, message_id=row_id))
    return enqueue(connection, jobs) if jobs else 0


class SettingsOps:
    """Store methods (mixed into `Store`)."""

    def _settings_access(self: Store, s: Any, actor: Actor | str, address: str, *, write: bool) -> Any:
        who = as_actor(actor)
        row = s.execute(select(Mailbox.id, Mailbox.address, Mailbox.settings)
                        .where(Mailbox.address == address.strip().lower())).first()
        if row is None:
            raise MailboxNotFound(f"no mailbox {address.strip().lower()}.")
        if who.kind is ActorKind.SYSTEM and write:
            raise AccessDenied("a server component does not change a mailbox's settings.")
        if who.kind is ActorKind.USER:
            _id, _address, rights = self._access(s, who, row.address)
            if rights not in ("owner", "full"):
                raise AccessDenied(f"{who.name} may not see the settings of {row.address}.")
        return row

    def mailbox_settings(self: Store, actor: Actor | str, address: str) -> dict[str, Any]:
        """The mailbox's settings: its owner, a delegate with `full` rights, an
        administrator, a server component (crypto's policy, the delivery's
        out-of-office and forwarding). MailboxNotFound / AccessDenied otherwise."""
        with self.db.read() as s:
            row = self._settings_access(s, actor, address, write=False)
        return dict(row.settings or {})

    def update_mailbox_settings(self: Store, actor: Actor | str, address: str, changes: Mapping[str, Any], *,
                                ip: str = "", trust_domains: Collection[str] | None = None) -> dict[str, Any]:
        """Apply `changes` (a key set to None is removed) after `validate`; returns the
        settings as stored. Forwarding addresses must be in a local domain or in
        `trust_domains` (the server's `[trust] domains`; the webmail passes them: the
        store does not read the configuration). Changing the out-of-office message
        forgets whom it already answered (they get the new one). Audited `admin`."""
        who = as_actor(actor)
        if who.kind is ActorKind.USER and any(k in changes for k in OPERATOR_KEYS):
            # [crypto] is the operator's policy; a user could only lower it.
            raise SettingsError("La politique de signature et de chiffrement est fixée par l'administrateur.")
        with self.db.write() as s:
            row = self._settings_access(s, who, address, write=True)
            trusted = None
            if trust_domains is not None:
                trusted = {d.lower() for d in trust_domains} | set(s.execute(select(Domain.name)).scalars())
            clean = validate(changes, row.address, trusted)
            current = dict(row.settings or {})
            settings = dict(current)
            for key, value in clean.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            changed = sorted(k for k in set(current) | set(settings) if current.get(k) != settings.get(k))
            if not changed:
                return settings
            s.execute(update(Mailbox).where(Mailbox.id == row.id).values(settings=settings))
            if "out_of_office" in changed:
                s.execute(delete(AutoReply).where(AutoReply.mailbox_id == row.id))
            audit.record(s, audit.ADMIN, actor=who.audit_name, mailbox=row.address, ip=ip,
                         details={"op": "settings.update", "keys": changed})
            return settings

    def claim_auto_reply(self: Store, address: str, correspondent: str, *, now: datetime | None = None) -> bool:
        """Whether `address` may answer `correspondent` now (RFC 3834 section 2: not
        within 7 days of the last answer), and if so record that it does, in one
        transaction: two deliveries racing for one correspondent answer once."""
        now = now or datetime.now(UTC)
        correspondent = correspondent.strip().lower()[:320]
        with self.db.write() as s:
            box_id = s.execute(select(Mailbox.id).where(Mailbox.address == address.strip().lower())
                               ).scalar_one_or_none()
            if box_id is None:
                return False
            last = s.execute(select(AutoReply.last_sent).where(
                AutoReply.mailbox_id == box_id, AutoReply.correspondent == correspondent).with_for_update()
            ).scalar_one_or_none()
            if last is not None and now - last < REPLY_INTERVAL:
                return False
            if last is not None:
                s.execute(update(AutoReply).where(AutoReply.mailbox_id == box_id,
                                                  AutoReply.correspondent == correspondent)
                          .values(last_sent=now))
                return True
            dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
            inserted = s.execute(dialect.insert(AutoReply).values(
                mailbox_id=box_id, correspondent=correspondent, last_sent=now).on_conflict_do_nothing())
            return bool(getattr(inserted, "rowcount", 0))


__all__ = ["FORWARD_KIND", "KEYS", "MAX_SIGNATURE", "OPERATOR_KEYS", "REPLY_INTERVAL", "REPLY_KIND",
           "SettingsError", "SettingsOps", "automail_jobs", "forward_addresses", "out_of_office_active", "parsed",
           "validate"]
