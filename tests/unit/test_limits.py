"""mssmail/limits.py, sans-IO: the counters every listener asks, and the input budget."""

from __future__ import annotations

import resource

from hypothesis import given
from hypothesis import strategies as st

from mssmail import limits
from mssmail.config import load_config


def config(tmp_path, **env):
    return load_config(tmp_path, environ={f"MSS_LIMITS_{k.upper()}": str(v) for k, v in env.items()})


def test_settings_and_environment_overrides(tmp_path):
    c = config(tmp_path, preauth_timeout="5s", ldap_max_message_anonymous="128KB", input_budget="1MB")
    assert c.limits.preauth_timeout == 5
    assert c.limits.ldap_max_message_anonymous == 128 * 1024
    assert c.limits.input_budget == 1024 * 1024
    assert c.directory.paged_total_limit == 0


def test_total_is_capped_by_the_open_file_limit_minus_the_reserve(tmp_path):
    c = config(tmp_path, max_connections=4096, max_connections_per_listener=1024, fd_reserve=100)
    assert limits.ConnectionLimits.from_config(c, open_files=300) == limits.ConnectionLimits(200, 200, 20)
    assert limits.ConnectionLimits.from_config(c, open_files=100000) == limits.ConnectionLimits(4096, 1024, 20)


def test_per_ip_then_per_listener_then_total(tmp_path):
    gate = limits.ProcessLimits(limits.ConnectionLimits(total=5, per_listener=3, per_ip=2))
    assert gate.admit("ldap", "10.0.0.1") is None
    assert gate.admit("ldap", "::ffff:10.0.0.1") is None  # the same host, IPv4-mapped
    assert gate.admit("ldap", "10.0.0.1") == limits.TOO_MANY_FROM_IP
    assert gate.admit("imap", "10.0.0.1") is None  # each listener counts apart
    assert gate.admit("ldap", "10.0.0.2") is None
    assert gate.admit("ldap", "10.0.0.3") == limits.TOO_MANY_ON_PORT
    assert gate.admit("smtp", "10.0.0.4") is None
    assert gate.admit("smtp", "10.0.0.5") == limits.TOO_MANY_IN_TOTAL
    gate.release("ldap", "10.0.0.2")
    assert gate.admit("smtp", "10.0.0.5") is None
    gate.release("ldap", "10.9.9.9")  # never admitted: no effect
    assert gate.total == 5


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b"]), st.sampled_from(["1.1.1.1", "2.2.2.2", "::1"])),
                max_size=200))
def test_counts_never_go_negative_nor_past_the_limits(ops):
    gate = limits.ProcessLimits(limits.ConnectionLimits(total=4, per_listener=3, per_ip=2))
    held: list[tuple[str, str]] = []
    for admit, listener, ip in ops:
        if admit:
            if gate.admit(listener, ip) is None:
                held.append((listener, ip))
        elif (listener, ip) in held:
            held.remove((listener, ip))
            gate.release(listener, ip)
        else:
            gate.release(listener, ip)
        assert gate.total == len(held) <= 4
        assert all(0 < n <= 3 for n in gate.per_listener.values() if n)
        assert all(0 < n <= 2 for n in gate.per_source.values())


def test_budget_refuses_growth_past_the_limit_but_never_shrinking():
    budget = limits.BufferBudget(100)
    a, b = object(), object()
    assert budget.hold(a, 60)
    assert not budget.hold(b, 50)
    assert budget.used == 60
    assert budget.hold(b, 40)
    assert budget.hold(a, 70) is False and budget.hold(a, 10)
    budget.drop(a)
    budget.drop(a)
    assert budget.used == 40


def test_raise_open_files_limit_reaches_the_hard_limit():
    soft, hard = limits.raise_open_files_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
    assert hard == resource.RLIM_INFINITY or soft == hard
