"""Configuration: the example file is complete and loads; errors name file, key and expectation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mssmail.config import SECTIONS, Config, ConfigError, load_config, parse_duration, parse_size

EXAMPLE = Path(__file__).resolve().parents[3] / "conf" / "mss.example.toml"


def test_example_documents_every_setting():
    example = tomllib.loads(EXAMPLE.read_text())
    for section, model in SECTIONS.items():
        assert section in example, f"[{section}] missing from conf/mss.example.toml"
        missing = set(model.model_fields) - set(example[section])
        assert not missing, f"[{section}] {sorted(missing)} not documented in the example"


def test_example_loads_with_defaults(tmp_path: Path):
    (tmp_path / "mss.toml").write_text(EXAMPLE.read_text())
    config = load_config(tmp_path, environ={})
    assert config.smtp.port == 2525 and config.submission.port == 2587
    assert config.imap.port == 2143 and config.imaps.port == 2993
    assert config.ldap.port == 2389 and config.web.port == 8443
    assert config.relay.max_age == 5 * 86400
    assert config.limits.max_message_size == 50 * 1024 * 1024
    assert config.database_url == f"sqlite:///{(tmp_path / 'mss.db').resolve()}"


def test_environment_overrides(tmp_path: Path):
    config = load_config(tmp_path, environ={
        "MSS_SMTP_PORT": "2600",
        "MSS_TRUST_DOMAINS": "A.example, b.example",
        "MSS_RELAY_ROUTES": "b.example=127.0.0.1:2625,c.example=127.0.0.1:2725",
        "MSS_IMAPS_PORT": "0",
        "MSS_CRYPTO_SIGN_OUTGOING": "true",
        "MSS_DATABASE_URL": "postgresql+psycopg://root@127.0.0.1:5432/test",
        "MSS_RELAY_MAX_AGE": "2h",
    })
    assert config.smtp.port == 2600
    assert config.trust.domains == ["a.example", "b.example"]
    assert config.relay.route_table() == {"b.example": ("127.0.0.1", 2625), "c.example": ("127.0.0.1", 2725)}
    assert config.imaps.port == 0 and config.imap.port == 2143
    assert config.crypto.sign_outgoing is True
    assert config.relay.max_age == 7200
    assert config.database_url.startswith("postgresql+psycopg://")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[smtp]\nport = 'abc'\n", "[smtp] port"),
        ("[smtp]\nport = 70000\n", "[smtp] port"),
        ("[smtp]\nprot = 25\n", "unknown setting [smtp] prot"),
        ("[smpt]\nport = 25\n", "unknown section [smpt]"),
        ("[crypto]\nencrypt_outgoing = 'sometimes'\n", "[crypto] encrypt_outgoing"),
        ("[relay]\nroutes = ['nonsense']\n", "[relay] routes"),
        ("[relay]\nmax_age = 'soon'\n", "[relay] max_age"),
        ("[server\n", "not valid TOML"),
        ("[oidc]\nissuer = 'https://auth.example/realms/x'\n", "audience must list"),
        ("[oidc]\nissuer = 'http://auth.example/'\naudience = ['mss']\n", "[oidc] issuer"),
        ("[oidc]\nalgorithms = ['HS256']\n", "[oidc] algorithms"),
        ("[web]\npsc_issuer = 'http://psc.example/'\n", "[web] psc_issuer"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, toml: str, expected: str):
    (tmp_path / "mss.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    message = str(info.value)
    assert str(tmp_path / "mss.toml") in message
    assert expected in message
    assert "\n" not in message


def test_environment_error_names_the_variable_source(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"environment.*\[smtp\] port"):
        load_config(tmp_path, environ={"MSS_SMTP_PORT": "many"})


def test_missing_file_when_required(tmp_path: Path):
    with pytest.raises(ConfigError, match="mss init"):
        load_config(tmp_path, environ={}, require_file=True)


def test_units():
    assert parse_duration("15m") == 900 and parse_duration(30) == 30 and parse_duration("5d") == 432000
    assert parse_size("25MB") == 25 * 1024**2 and parse_size("512k") == 512 * 1024
    with pytest.raises(ValueError):
        parse_size("lots")
    assert Config().hostname == "mss.localhost"
