"""Issue 13: "MLLP and SMTP cannot be exactly once without the peer: resend with the same
MSH-10 so the peer can drop the duplicate; a test asserts one job never produces two
control ids". `mss serve` with an MLLP connector to a real MLLP listener on loopback that
records every message it receives; the listener holds its ACK back while `mss serve` is
killed (SIGKILL) with that delivery in flight, three times, and restarted each time.
Afterwards every result arrived at least once, the ones in flight at a kill arrived again
after the restart, and every result (one job) carries one MSH-10 across all its copies,
distinct from every other result's."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest

from tests.support.connector_load import LAB, make_instance, message
from tests.unit.connectors.test_mllp_target import Listener

pytestmark = pytest.mark.timeout(600)
COUNT = 12
KILLS = 3


class HoldingListener(Listener):
    """AA to everything, but while `hold` is set the ACK waits until it is cleared (the
    message is recorded first: a kill then lands between "received" and "acknowledged")."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.held = threading.Event()  # a message arrived while holding
        super().__init__()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.hold.is_set():
            data = await reader.readuntil(b"\x1c\r")
            self.received.append(data[1:-2])
            self.held.set()
            while self.hold.is_set():
                await asyncio.sleep(0.02)
            writer.close()  # the sender is dead by now: no ACK
            return
        await super()._handle(reader, writer)


@pytest.fixture
def listener() -> Iterator[HoldingListener]:
    server = HoldingListener()
    yield server
    server.close()


def _result_number(raw: bytes) -> int:
    """Which sent result a received ORU^R01 is (the patient id L<n> the load gives each)."""
    match = re.search(rb"L(\d{9})", raw)
    assert match, raw[:200]
    return int(match.group(1))


def test_kill9_during_mllp_delivery_resends_with_the_same_control_id(tmp_path: Path,
                                                                     listener: HoldingListener) -> None:
    inst, _folder = make_instance(tmp_path / "a.example", workers=1)
    dui = f"dui@{inst.domain}"
    for rule in json.loads(inst.mss("connector", "list", "--json").stdout):
        inst.mss("connector", "remove", str(rule["id"]))  # the demo's folder rule
    inst.mss("connector", "add", dui, "--type", "mllp", "--target", f"127.0.0.1:{listener.port}",
             "--match", "kind=hprim_net")
    inst.start("smtp", "connectors")
    in_flight: list[int] = []
    try:
        with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30) as client:
            client.ehlo("labo.b.example")
            for n in range(COUNT):
                client.sendmail(LAB, [dui], message(n, dui))
        for _ in range(KILLS):
            listener.held.clear()
            listener.hold.set()
            assert listener.held.wait(120), "a delivery reached the listener"
            in_flight.append(_result_number(listener.received[-1]))
            inst.kill()  # SIGKILL with the ACK not yet sent
            listener.hold.clear()
            inst.start("smtp", "connectors")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = json.loads(inst.mss("connector", "jobs", "--json").stdout)
            deliveries = [j for j in jobs if j.get("kind") == "connector.deliver"]
            if len(deliveries) == COUNT and all(j["state"] == "done" for j in deliveries):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"deliveries not done: {deliveries}")
    finally:
        inst.stop()

    ids: dict[int, set[str]] = defaultdict(set)
    copies: dict[int, int] = defaultdict(int)
    for raw in listener.received:
        parsed = hl7.parse(raw.decode("utf-8"))
        n = _result_number(raw)
        ids[n].add(str(parsed.segment("MSH")[10]))
        copies[n] += 1
    assert sorted(ids) == list(range(COUNT)), "every result arrived at least once"
    assert all(len(found) == 1 for found in ids.values()), f"one job, one MSH-10: {dict(ids)}"
    assert len({next(iter(found)) for found in ids.values()}) == COUNT, "one MSH-10 per job"
    assert len(in_flight) == KILLS
    for n in in_flight:
        assert copies[n] >= 2, f"result {n} was in flight at a kill and was sent again"
    assert len(listener.received) >= COUNT + KILLS
