"""Directory tables: persons, structures, activities, mailboxes (BAL), certificates, PGP keys.

Field names follow the national open-data files (ANS open data). Every attribute
an LDAP filter or the autocomplete can search has a lowercased copy (`*_lc`) with an index, so
case-insensitive equality (RFC 4517 caseIgnoreMatch) and prefix matching become indexed SQL:
on PostgreSQL those indexes use `text_pattern_ops` so `LIKE 'abc%'` can use them whatever the
collation. A directory mailbox is linked to the core's mailbox by its address (no foreign key:
the directory also lists other operators' mailboxes of the space of trust).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mssmail.store.models import Base, utcnow

BAL_TYPES = ("PER", "ORG", "APP", "CAB")


def _prefix_index(name: str, column: str) -> Index:
    """Index usable for `col = x` and `col LIKE 'x%'` on both engines."""
    return Index(name, column, postgresql_ops={column: "text_pattern_ops"})


class DirPerson(Base):
    """A professional (RPPS or ADELI), the `inetOrgPerson` + `mssPerson` entry."""

    __tablename__ = "dir_persons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    id_type: Mapped[str] = mapped_column(String(8))  # RPPS | ADELI
    ident: Mapped[str] = mapped_column(String(20), index=True)
    # "Identification nationale PP": 8+RPPS / 0+ADELI, the natural key and the RDN.
    national_id: Mapped[str] = mapped_column(String(21), unique=True)
    civility_code: Mapped[str | None] = mapped_column(String(8))
    civility_label: Mapped[str | None] = mapped_column(String(40))
    family_name: Mapped[str] = mapped_column(String(200))
    family_lc: Mapped[str] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(200))
    given_lc: Mapped[str | None] = mapped_column(String(200))
    profession_code: Mapped[str | None] = mapped_column(String(8), index=True)
    profession_label: Mapped[str | None] = mapped_column(String(120))
    category_code: Mapped[str | None] = mapped_column(String(8))
    specialty_code: Mapped[str | None] = mapped_column(String(16), index=True)
    specialty_label: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16), default="local")  # local|activity|mssante|ldif|sync
    # Importers (directory/importers): the generation (DirImport.id) of the last import that
    # saw this row, and a digest of the imported fields to tell "unchanged" from "updated".
    import_gen: Mapped[int | None] = mapped_column(Integer)
    import_hash: Mapped[str | None] = mapped_column(String(16))
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)

    activities: Mapped[list[DirActivity]] = relationship(
        back_populates="person", cascade="all, delete-orphan", passive_deletes=True)

    __table_args__ = (
        _prefix_index("ix_dir_persons_family_lc", "family_lc"),
        _prefix_index("ix_dir_persons_given_lc", "given_lc"),
    )


class DirStructure(Base):
    """A structure (site): FINESS / SIRET / technical identifier, the `organization` entry."""

    __tablename__ = "dir_structures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "Identifiant technique de la structure" (column 24), else "F"+FINESS / "S"+SIRET.
    tech_id: Mapped[str] = mapped_column(String(40), unique=True)
    finess: Mapped[str | None] = mapped_column(String(9), index=True)
    finess_legal: Mapped[str | None] = mapped_column(String(9), index=True)
    siret: Mapped[str | None] = mapped_column(String(14), index=True)
    name: Mapped[str] = mapped_column(String(300))
    name_lc: Mapped[str] = mapped_column(String(300))
    brand: Mapped[str | None] = mapped_column(String(300))
    street: Mapped[str | None] = mapped_column(String(300))
    postal_code: Mapped[str | None] = mapped_column(String(10), index=True)
    city: Mapped[str | None] = mapped_column(String(120))
    city_lc: Mapped[str | None] = mapped_column(String(120))
    phone: Mapped[str | None] = mapped_column(String(40))
    sector_code: Mapped[str | None] = mapped_column(String(8), index=True)
    sector_label: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16), default="local")
    # Importers (directory/importers): the generation (DirImport.id) of the last import that
    # saw this row, and a digest of the imported fields to tell "unchanged" from "updated".
    import_gen: Mapped[int | None] = mapped_column(Integer)
    import_hash: Mapped[str | None] = mapped_column(String(16))
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)

    __table_args__ = (
        _prefix_index("ix_dir_structures_name_lc", "name_lc"),
        _prefix_index("ix_dir_structures_city_lc", "city_lc"),
    )


class DirActivity(Base):
    """One row of the activity file: a professional working at a structure in a role."""

    __tablename__ = "dir_activities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("dir_persons.id", ondelete="CASCADE"), index=True)
    structure_id: Mapped[int | None] = mapped_column(
        ForeignKey("dir_structures.id", ondelete="SET NULL"), index=True)
    role_code: Mapped[str | None] = mapped_column(String(8))
    role_label: Mapped[str | None] = mapped_column(String(120))
    mode_code: Mapped[str | None] = mapped_column(String(8))
    mode_label: Mapped[str | None] = mapped_column(String(120))
    # Activity-file rows: a digest of the row's identity (person, structure, role, mode) and
    # the generation of the last import that saw it (directory/importers).
    import_key: Mapped[str | None] = mapped_column(String(32), unique=True)
    import_gen: Mapped[int | None] = mapped_column(Integer)

    person: Mapped[DirPerson] = relationship(back_populates="activities")
    structure: Mapped[DirStructure | None] = relationship()


class DirMailbox(Base):
    """An MSSanté mailbox (BAL). Address and type are not modifiable after creation."""

    __tablename__ = "dir_mailboxes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    address_lc: Mapped[str] = mapped_column(String(320), unique=True)
    bal_type: Mapped[str] = mapped_column(String(3), index=True)  # PER|ORG|APP|CAB
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("dir_persons.id", ondelete="SET NULL"), index=True)
    structure_id: Mapped[int | None] = mapped_column(
        ForeignKey("dir_structures.id", ondelete="SET NULL"), index=True)
    display_name: Mapped[str | None] = mapped_column(String(300))
    display_lc: Mapped[str | None] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    service: Mapped[str | None] = mapped_column(String(300))
    responsible: Mapped[str | None] = mapped_column(String(300))
    unlisted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)  # liste rouge
    preferred_rank: Mapped[int] = mapped_column(Integer, default=1)
    dematerialised: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16), default="local")
    # Importers (directory/importers): the generation (DirImport.id) of the last import that
    # saw this row, and a digest of the imported fields to tell "unchanged" from "updated".
    import_gen: Mapped[int | None] = mapped_column(Integer)
    import_hash: Mapped[str | None] = mapped_column(String(16))
    modified_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)

    person: Mapped[DirPerson | None] = relationship()
    structure: Mapped[DirStructure | None] = relationship()
    certificates: Mapped[list[DirCertificate]] = relationship(
        back_populates="mailbox", cascade="all, delete-orphan", passive_deletes=True)

    __table_args__ = (
        # PostgreSQL needs text_pattern_ops for `LIKE 'x%'`; on SQLite the unique index on
        # address_lc serves the prefix range (directory/sqlfilter.py), so this one is left empty
        # there (`WHERE 0`: never maintained, never planned; migration 0003).
        Index("ix_dir_mailboxes_address_lc_prefix", "address_lc", postgresql_ops={"address_lc": "text_pattern_ops"},
              sqlite_where=false()),
        _prefix_index("ix_dir_mailboxes_display_lc", "display_lc"),
    )


class DirCertificate(Base):
    """A DER certificate of a mailbox (`userCertificate;binary`), for signature or encryption."""

    __tablename__ = "dir_certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("dir_mailboxes.id", ondelete="CASCADE"), index=True)
    usage: Mapped[str] = mapped_column(String(12))  # signature | encryption
    der: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    not_after: Mapped[datetime | None] = mapped_column()

    mailbox: Mapped[DirMailbox] = relationship(back_populates="certificates")


class DirPgpKey(Base):
    """An optional OpenPGP public key of a mailbox (ASCII armour)."""

    __tablename__ = "dir_pgp_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("dir_mailboxes.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    armored: Mapped[str] = mapped_column(Text)


class DirSyncState(Base):
    """Per-upstream high-water mark (`modifyTimestamp`) for incremental sync."""

    __tablename__ = "dir_sync_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upstream: Mapped[str] = mapped_column(String(500), unique=True)
    last_modify_ts: Mapped[str | None] = mapped_column(String(32))
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class DirImport(Base):
    """One run of an importer (national files, LDIF); its id is the import generation."""

    __tablename__ = "dir_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # activity | mssante | ldif
    filename: Mapped[str] = mapped_column(String(500))
    encoding: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
