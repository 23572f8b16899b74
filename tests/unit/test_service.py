"""`mss serve`'s runner: which selections run Twisted's reactor."""

from __future__ import annotations

import subprocess
import sys

from mssmail.service import COMPONENTS, TWISTED_SERVICES, needs_twisted


def test_only_imap_and_ldap_need_the_reactor():
    assert needs_twisted(None) and needs_twisted([])  # everything, IMAP and LDAP included
    assert needs_twisted(["web", "imap"]) and needs_twisted(["ldap"])
    assert not needs_twisted(["web"]) and not needs_twisted(["smtp", "submission", "relay", "web"])
    assert set(COMPONENTS) >= TWISTED_SERVICES


def test_the_other_services_do_not_import_twisted():
    """A selection without IMAP and LDAP runs on the plain asyncio loop: its modules must
    not need the reactor (and not pay Twisted's memory, issue 14)."""
    modules = [spec.split(":")[0] for name, spec in COMPONENTS.items() if name not in TWISTED_SERVICES]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ModuleNotFoundError:\n        pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
