"""Issue 13 parts 12-13 as a test: HPRIM results sent by SMTP to the DUI mailbox under a
steady load while `mss serve` is killed (SIGKILL) at random moments and restarted; a
message whose 250 did not arrive is sent again, as an MTA would. Afterwards every message
is in the DUI folder exactly once: none lost, none twice (folder target, job keys).
The load and the checks are in tests/support/connector_load.py (bench/connector_e2e.py
runs the same with more messages and more kills)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.connector_load import make_instance, run_load

pytestmark = pytest.mark.timeout(600)


def test_kill9_under_load_delivers_every_result_exactly_once(tmp_path: Path) -> None:
    inst, folder = make_instance(tmp_path / "a.example")
    inst.start("smtp", "connectors")
    try:
        result = run_load(inst, folder, count=120, rate=20, connections=4, kills=3)
    finally:
        inst.stop()
    assert len(result.kills) == 3
    assert len(result.acked) == result.sent == 120, "every message acknowledged in the end"
    assert result.failures > 0, "the kills must land in the middle of the load"
    assert result.lost == []
    assert result.duplicated == []
    assert sorted(result.files) == list(range(120))
    jobs = inst.mss("connector", "jobs", "--state", "dead", "--json").stdout
    assert jobs.strip() in ("[]", "")
