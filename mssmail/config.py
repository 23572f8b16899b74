"""Typed configuration: `DATA/mss.toml` overridden by `MSS_SECTION_KEY` variables.

Every setting lives in `conf/mss.example.toml` with its documentation; this module
only gives each one a type, a default and a check. A wrong key or value stops the
program with one sentence naming the file, the key and what is expected.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SIZE_UNITS = {"": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


class ConfigError(Exception):
    """A configuration problem, worded for the administrator."""


def parse_duration(value: Any) -> int:
    """Seconds from an int or a string such as "90", "30s", "15m", "4h", "5d"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, '15m', '4h' or '5d'")
    if isinstance(value, int | float):
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if not match:
        raise ValueError("expected a duration such as 300, '15m', '4h' or '5d'")
    return int(float(match.group(1)) * DURATION_UNITS.get(match.group(2) or "s", 1))


def parse_size(value: Any) -> int:
    """Bytes from an int or a string such as "10MB", "512k", "1G"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576, '512KB', '25MB' or '1GB'")
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?[bB]?)\s*", str(value))
    if not match:
        raise ValueError("expected a size such as 1048576, '512KB', '25MB' or '1GB'")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Port = Field(ge=0, le=65535)


class ServerConfig(Section):
    domain: str = "mss.localhost"
    hostname: str = ""  # defaults to the domain
    bind: str = "127.0.0.1"
    data: str = ""  # filled in from --data / MSS_DATA
    tls_cert: str = "pki/server.pem"
    tls_key: str = "pki/server.key"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_file: str = "logs/mss.log"
    log_max_size: int = 10 * 1024 * 1024
    log_backups: int = Field(default=10, ge=0)
    shutdown_grace: int = 20

    @field_validator("shutdown_grace", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)

    @field_validator("log_max_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)


class DatabaseConfig(Section):
    url: str = "sqlite:///mss.db"
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False


class ListenerConfig(Section):
    port: int = Port
    bind: str = ""  # empty: [server] bind


class SmtpConfig(ListenerConfig):
    port: int = Field(default=2525, ge=0, le=65535)
    # SMTP worker processes (TLS + SMTP) in front of the serve process's store; 0 = in process.
    workers: int = Field(default=0, ge=0, le=64)


class SubmissionConfig(ListenerConfig):
    port: int = Field(default=2587, ge=0, le=65535)
    workers: int = Field(default=0, ge=0, le=64)


class ImapConfig(ListenerConfig):
    port: int = Field(default=2143, ge=0, le=65535)
    # Both IMAP listeners: longest a command may run; how often a session checks the
    # store for changes made by other processes (same-process changes arrive at once).
    command_timeout: int = 300
    poll_interval: int = 5

    @field_validator("command_timeout", "poll_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)


class ImapsConfig(ListenerConfig):
    port: int = Field(default=2993, ge=0, le=65535)


class LdapConfig(ListenerConfig):
    port: int = Field(default=2389, ge=0, le=65535)
    ldaps_port: int = Field(default=0, ge=0, le=65535)
    # Password binds without TLS are refused (confidentialityRequired) unless this is true.
    allow_plain_bind: bool = False


class WebConfig(ListenerConfig):
    port: int = Field(default=8443, ge=0, le=65535)
    # The webmail in a process of its own under `mss serve` (webmail/process.py): its pages
    # then do not hold up SMTP on one loop. false: on the loop of `mss serve` itself.
    child_process: bool = True
    # With child_process: its scheduling niceness (0-19; above 0 it yields the CPU to
    # SMTP, IMAP and the relay of mss serve when the machine is busy).
    nice: int = Field(default=0, ge=0, le=19)
    # A webmail session ends after this long without a request, and this long after
    # the login whatever happens (a shared practice computer).
    session_idle: int = 15 * 60
    session_max: int = 12 * 3600
    # "Se connecter avec Pro Santé Connect" (webmail/psc.py): shown when psc_issuer and
    # psc_client_id are set. OIDC code flow with PKCE; the RPPS in psc_claim -> the PER box.
    psc_issuer: str = ""
    psc_client_id: str = ""
    psc_client_secret: str = ""
    psc_redirect_uri: str = ""  # empty: https://<hostname>:<port>/connexion/psc/retour
    psc_scopes: list[str] = Field(default_factory=lambda: ["openid", "scope_all"])
    psc_acr_values: str = "eidas1"
    psc_claim: str = "SubjectNameID"
    psc_ca_file: str = ""

    @field_validator("session_idle", "session_max", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        seconds = parse_duration(v)
        if seconds < 60:
            raise ValueError("a session lasts at least one minute ('1m')")
        return seconds

    @field_validator("psc_issuer", "psc_redirect_uri")
    @classmethod
    def _https_url(cls, v: str) -> str:
        if v and not v.startswith("https://"):
            raise ValueError("expected an https:// URL")
        return v

    @property
    def psc_enabled(self) -> bool:
        return bool(self.psc_issuer and self.psc_client_id)


class OidcConfig(Section):
    """Bearer tokens (SASL OAUTHBEARER / XOAUTH2) for IMAP and submission (mssmail/oidc.py)."""

    issuer: str = ""  # empty: the mechanisms are not offered
    audience: list[str] = Field(default_factory=list)
    claim: str = "email"
    identity: Literal["address", "rpps"] = "address"
    algorithms: list[Literal["RS256", "ES256", "PS256"]] = Field(
        default_factory=lambda: ["RS256", "ES256", "PS256"])
    leeway: int = Field(default=60, ge=0, le=600)
    jwks_refresh: int = 3600
    jwks_min_refresh: int = Field(default=60, ge=1)
    ca_file: str = ""

    @field_validator("leeway", "jwks_refresh", "jwks_min_refresh", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)

    @field_validator("issuer")
    @classmethod
    def _https_url(cls, v: str) -> str:
        if v and not v.startswith("https://"):
            raise ValueError("expected an https:// URL")
        return v

    @model_validator(mode="after")
    def _audience_with_issuer(self) -> OidcConfig:
        # An issuer such as Pro Santé Connect mints tokens for many services: without an
        # audience check, a token given to any of them would open the mailbox here.
        if self.issuer and not self.audience:
            raise ValueError("audience must list this server's client id at the issuer when issuer is set")
        return self


class TrustConfig(Section):
    domains: list[str] = Field(default_factory=list)
    ca_files: list[str] = Field(default_factory=list)
    require_client_cert: bool = False

    @field_validator("domains")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [d.strip().lower() for d in v if d.strip()]


class RelayConfig(Section):
    routes: list[str] = Field(default_factory=list)
    use_mx: bool = False
    retry_initial: int = 60
    retry_max_interval: int = 3600
    max_age: int = 5 * 86400
    delay_warning_after: int = 4 * 3600
    poll_interval: int = 5
    connect_timeout: int = 30
    workers: int = Field(default=4, ge=1, le=64)

    @field_validator(
        "retry_initial", "retry_max_interval", "max_age", "delay_warning_after",
        "poll_interval", "connect_timeout", mode="before",
    )
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: list[str]) -> list[str]:
        for route in v:
            if not re.fullmatch(r"[^=\s]+=[^:\s]+:\d{1,5}", route.strip()):
                raise ValueError(f"expected routes like 'b.example=127.0.0.1:2625', got {route!r}")
        return [r.strip() for r in v]

    def route_table(self) -> dict[str, tuple[str, int]]:
        table: dict[str, tuple[str, int]] = {}
        for route in self.routes:
            domain, target = route.split("=", 1)
            host, port = target.rsplit(":", 1)
            table[domain.lower()] = (host, int(port))
        return table


class DirectoryConfig(Section):
    base_dn: str = "o=mss,c=fr"
    admin_dn: str = "cn=admin,o=mss,c=fr"
    admin_password_hash: str = ""
    size_limit: int = Field(default=1000, ge=1)
    time_limit: int = Field(default=30, ge=1)
    # Entries a non-administrator reads through all the pages of one paged search (RFC 2696);
    # 0: size_limit (as slapd's size.prtotal defaults to the hard size limit).
    paged_total_limit: int = Field(default=0, ge=0)


class CryptoConfig(Section):
    sign_outgoing: bool = False
    encrypt_outgoing: Literal["never", "when-possible", "required"] = "never"
    authserv_id: str = ""  # defaults to the host name
    sign_attachments: bool = True  # a detached <name>.p7s beside each attachment
    # The sender's signing certificate is revoked or expired: send unsigned, or refuse.
    unusable_signer: Literal["send-unsigned", "refuse"] = "refuse"
    verify_incoming: bool = True


class ConnectorsConfig(Section):
    enabled: bool = True
    poll_interval: int = 2
    max_attempts: int = Field(default=20, ge=1)
    # A claimed job is taken over by another worker when not finished within this.
    lease: int = Field(default=300, ge=1)
    retry_initial: int = Field(default=30, ge=1)
    retry_max_interval: int = Field(default=6 * 3600, ge=1)
    max_age: int = Field(default=48 * 3600, ge=1)
    mllp_timeout: int = Field(default=30, ge=1)
    # Job threads of the worker (each claims and runs a batch of jobs at a time; new
    # mail wakes one). 4: docs/performance.md, connectors end to end.
    workers: int = Field(default=4, ge=1, le=32)
    # A pickup folder's file is read once unchanged this long (its writer is done).
    pickup_settle: int = Field(default=2, ge=0)
    # fhir, smtp and imap targets: connection and each answer.
    network_timeout: int = Field(default=30, ge=1)

    @field_validator("poll_interval", "lease", "retry_initial", "retry_max_interval", "max_age", "mllp_timeout",
                     "pickup_settle", "network_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)


class SearchConfig(Section):
    """Full-text index (mssmail/store/fts.py)."""

    # false: `mss serve` runs no indexer (searches then read every message, as without an index).
    enabled: bool = True
    # Index the readable form of encrypted messages (only where the server holds the key):
    # "personal" (personal mailboxes only), "all", or "none". Not indexed: always read.
    index_encrypted: Literal["personal", "all", "none"] = "personal"
    # Messages per indexing transaction, and how often an idle indexer looks again.
    batch: int = Field(default=200, ge=1, le=5000)
    poll_interval: int = Field(default=1, ge=1)

    @field_validator("poll_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)


class AuditConfig(Section):
    # A signed checkpoint of the audit chain's head into checkpoint_dir this often (0: never).
    checkpoint_interval: int = 3600
    checkpoint_dir: str = "audit"

    @field_validator("checkpoint_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)


class LimitsConfig(Section):
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = Field(default=100, ge=1)
    max_connections_per_ip: int = Field(default=20, ge=1)
    smtp_timeout: int = 300
    auth_delay_after: int = Field(default=3, ge=1)
    auth_lockout_after: int = Field(default=10, ge=1)
    auth_lockout_time: int = 900
    # Source throttling (mssmail/store/passwords.py): auth_lockout_after failures from one
    # address, or auth_network_lockout_after from its /24 or /64, block that source for
    # auth_lockout_time; counters expire auth_failure_window after their last failure.
    auth_network_lockout_after: int = Field(default=30, ge=1)
    auth_failure_window: int = 900
    # Argon2 (argon2id) cost and its own thread pool with a bounded queue.
    auth_hash_memory: int = 19 * 1024 * 1024
    auth_hash_time_cost: int = Field(default=2, ge=1, le=50)
    auth_hash_parallelism: int = Field(default=1, ge=1, le=16)
    auth_hash_workers: int = Field(default=2, ge=1, le=64)
    auth_hash_queue: int = Field(default=16, ge=0, le=10_000)
    auth_cache_ttl: int = 120
    # SMTP dialogue (mssmail/smtp/abuse.py): errors answered at once, then each after
    # a growing delay, and at the hard limit the session ends; junk commands (NOOP,
    # VRFY, HELP, RSET) and any other command at most so many times a session; the
    # whole session at most smtp_session_time.
    smtp_soft_error_limit: int = Field(default=5, ge=0)
    smtp_hard_error_limit: int = Field(default=20, ge=1)
    smtp_error_delay: float = Field(default=1.0, ge=0, le=60)
    smtp_junk_command_limit: int = Field(default=50, ge=1)
    smtp_command_limit: int = Field(default=1000, ge=1)
    smtp_session_time: int = 1800
    imap_max_literal: int = 64 * 1024 * 1024
    imap_max_line: int = 64 * 1024
    imap_idle_timeout: int = 1800
    default_quota: int = 2 * 1024**3
    # Connections and descriptors (mssmail/limits.py): every listener of a process together,
    # one listener, descriptors kept from peers; idle time before login / bind.
    max_connections: int = Field(default=4096, ge=1)
    max_connections_per_listener: int = Field(default=1024, ge=1)
    fd_reserve: int = Field(default=256, ge=16)
    preauth_timeout: int = 60
    ldap_idle_timeout: int = 300
    # Input held before a peer has authenticated, and by all connections together.
    imap_max_literal_preauth: int = 16 * 1024
    ldap_max_message_anonymous: int = 256 * 1024
    ldap_max_message: int = 4 * 1024 * 1024
    input_budget: int = 512 * 1024 * 1024

    @field_validator("max_message_size", "imap_max_literal", "imap_max_line", "default_quota",
                     "auth_hash_memory", "imap_max_literal_preauth", "ldap_max_message_anonymous",
                     "ldap_max_message", "input_budget", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    @field_validator("smtp_timeout", "auth_lockout_time", "imap_idle_timeout", "auth_failure_window",
                     "auth_cache_ttl", "preauth_timeout", "ldap_idle_timeout", "smtp_session_time",
                     mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return parse_duration(v)


class Config(Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    submission: SubmissionConfig = Field(default_factory=SubmissionConfig)
    imap: ImapConfig = Field(default_factory=ImapConfig)
    imaps: ImapsConfig = Field(default_factory=ImapsConfig)
    ldap: LdapConfig = Field(default_factory=LdapConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    oidc: OidcConfig = Field(default_factory=OidcConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    crypto: CryptoConfig = Field(default_factory=CryptoConfig)
    connectors: ConnectorsConfig = Field(default_factory=ConnectorsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    # --- derived values -------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.server.data)

    @property
    def hostname(self) -> str:
        return self.server.hostname or self.server.domain

    def path(self, relative: str) -> Path:
        """A path setting, relative to the data directory unless absolute."""
        p = Path(relative)
        return p if p.is_absolute() else self.data_dir / p

    @property
    def database_url(self) -> str:
        url = self.database.url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            rel = url[len("sqlite:///"):]
            if rel and rel != ":memory:":
                return "sqlite:///" + str(self.path(rel).resolve())
        return url

    def bind_of(self, listener: ListenerConfig) -> str:
        return listener.bind or self.server.bind

    def trust_domains(self) -> set[str]:
        """Domains we exchange with: the configured space of trust plus our own."""
        return {*self.trust.domains, self.server.domain.lower()}


SECTIONS: dict[str, type[Section]] = {
    name: field.default_factory  # type: ignore[misc]
    for name, field in Config.model_fields.items()
}


# MSS_* variables that are not settings: the command's own, and the test suite's.
_OTHER_VARIABLES = ("MSS_DATA", "MSS_CONFIG")
_RESERVED_PREFIXES = ("MSS_TEST_",)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`MSS_SECTION_KEY=value` as {section: {key: value}}; the longest section name wins.
    A variable that names no setting is a warning (a typo would otherwise go unnoticed)."""
    overrides: dict[str, dict[str, str]] = {}
    names = sorted(SECTIONS, key=len, reverse=True)
    for var, value in environ.items():
        if not var.startswith("MSS_") or var in _OTHER_VARIABLES or var.startswith(_RESERVED_PREFIXES):
            continue
        rest = var[4:].lower()
        known = False
        for section in names:
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                if key in SECTIONS[section].model_fields:
                    overrides.setdefault(section, {})[key] = value
                    known = True
                break
        if not known:
            logging.getLogger("mss.config").warning(
                "mss: warning: %s is not a setting and is ignored (MSS_<SECTION>_<SETTING>, "
                "e.g. MSS_SERVER_DOMAIN; or MSS_DATA, MSS_CONFIG).", var)
    return overrides


def _coerce_env(section: str, key: str, raw: str) -> Any:
    annotation = SECTIONS[section].model_fields[key].annotation
    if annotation == list[str]:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if annotation is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    return raw


def _describe(error: dict[str, Any], source: str) -> str:
    loc = [str(part) for part in error["loc"]]
    where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else f"[{loc[0]}]" if loc else "?"
    if error["type"] == "extra_forbidden":
        if len(loc) == 1:
            return f"{source}: unknown section [{loc[0]}] (known: {', '.join(SECTIONS)})."
        known = ", ".join(SECTIONS[loc[0]].model_fields) if loc[0] in SECTIONS else ""
        return f"{source}: unknown setting {where} (known in [{loc[0]}]: {known})."
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    return f"{source}: {where}: {message[0].lower() + message[1:]}, got {error.get('input')!r}."


def load_config(
    data_dir: str | Path,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    require_file: bool = False,
) -> Config:
    """Read the TOML file (if any) and the environment into a checked Config."""
    environ = os.environ if environ is None else environ
    data_path = Path(data_dir).resolve()
    path = Path(config_file) if config_file else data_path / "mss.toml"
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc}).") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror}).") from exc
    elif require_file:
        raise ConfigError(f"{path}: no such configuration file; run 'mss init' first.")
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table of settings.")
    source = str(path)
    env = _env_overrides(environ)
    for section, values in env.items():
        for key, value in values.items():
            raw.setdefault(section, {})[key] = _coerce_env(section, key, value)
    if env:
        source = f"{path} (with MSS_* environment overrides)"
    raw.setdefault("server", {})
    if not raw["server"].get("data"):
        raw["server"]["data"] = str(data_path)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], source)) from None


def example_config_path() -> Path:
    """The documented example shipped with the package (or the source tree)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "mss.example.toml", here.parent / "conf" / "mss.example.toml"):
        if candidate.exists():
            return candidate
    raise ConfigError("conf/mss.example.toml is missing from this installation.")
