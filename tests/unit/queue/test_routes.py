import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssmail.config import ConfigError, RelayConfig, load_config
from mssmail.queue import routes


def test_parse_route():
    assert routes.parse_route(" B.example=127.0.0.1:2625 ") == ("b.example", "127.0.0.1", 2625)


@pytest.mark.parametrize("bad", ["b.example", "b.example=host", "=h:1", "b.example=h:0", "b=h:99999", "b=:25"])
def test_parse_route_rejects(bad):
    with pytest.raises(ValueError):
        routes.parse_route(bad)


@given(st.text(max_size=40))
def test_parse_route_never_crashes_otherwise(text):
    try:
        domain, host, port = routes.parse_route(text)
    except ValueError:
        return
    assert domain and host and 0 < port < 65536


def test_resolve_static_route_case_insensitive():
    relay = RelayConfig(routes=["B.Example=127.0.0.1:2625"])
    assert routes.resolve("b.EXAMPLE", relay) == [("127.0.0.1", 2625)]


def test_domain_without_route_is_permanent():
    relay = RelayConfig(routes=["b.example=127.0.0.1:2625"])
    with pytest.raises(routes.NoRoute, match=r"c\.example"):
        routes.resolve("c.example", relay)


def test_domain_of():
    assert routes.domain_of("Claire.Durand@B.Example") == "b.example"


def test_routes_from_environment(tmp_path):
    config = load_config(tmp_path, environ={"MSS_RELAY_ROUTES": "b.example=127.0.0.1:2625,c.example=h:2725"})
    assert config.relay.route_table() == {"b.example": ("127.0.0.1", 2625), "c.example": ("h", 2725)}


def test_bad_route_in_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[relay\] routes"):
        load_config(tmp_path, environ={"MSS_RELAY_ROUTES": "b.example"})


def test_use_mx_without_dnspython_is_reported_clearly():
    try:
        import dns.resolver  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        pytest.skip("dnspython installed; this machine has no DNS to query")
    with pytest.raises(routes.NoRoute, match="needs dnspython"):
        routes.resolve("c.example", RelayConfig(use_mx=True))
