"""`mss queue list|retry|remove` on a real data directory (the command-line contract)."""

from __future__ import annotations

import json

import pytest

from mssmail.config import load_config
from mssmail.queue.outbound import enqueue
from mssmail.store.service import Store

pytestmark = pytest.mark.timeout(120)


def test_queue_commands(instance_factory):
    inst = instance_factory("a.example", demo=False)
    assert inst.mss("queue", "list").stdout.strip() == "the queue is empty"
    assert json.loads(inst.mss("queue", "list", "--json").stdout) == []
    store = Store.from_config(load_config(inst.data))
    try:
        first = enqueue(store, "jean.martin@a.example", ["claire.durand@b.example", "x@b.example"], b"Subject: 1\r\n\r\n1\r\n")
        second = enqueue(store, "", ["y@c.example"], b"Subject: 2\r\n\r\n2\r\n")
    finally:
        store.close()

    rows = json.loads(inst.mss("queue", "list", "--json").stdout)
    assert [set(r) for r in rows] == [{"id", "sender", "recipients", "attempts", "next_attempt", "last_error"}] * 2
    assert rows[0] == {**rows[0], "id": first, "sender": "jean.martin@a.example",
                       "recipients": ["claire.durand@b.example", "x@b.example"], "attempts": 0, "last_error": ""}
    assert rows[1]["sender"] == "" and rows[1]["id"] == second
    assert "claire.durand@b.example" in inst.mss("queue", "list").stdout

    assert "1 message(s) due now" in inst.mss("queue", "retry", str(first)).stdout
    assert "2 message(s) due now" in inst.mss("queue", "retry", "--all").stdout
    usage = inst.mss("queue", "retry", check=False)
    assert usage.returncode == 2
    inst.mss("queue", "remove", str(second))
    assert [r["id"] for r in json.loads(inst.mss("queue", "list", "--json").stdout)] == [first]

    missing = inst.mss("queue", "remove", str(second), check=False)
    assert missing.returncode == 1 and f"no queued message {second}" in missing.stderr
    events = [json.loads(line) for line in inst.mss("audit", "export").stdout.splitlines()]
    assert {e["details"].get("event") for e in events if e["action"] == "admin"} >= {"queue.retry", "queue.remove"}
    assert "intact" in inst.mss("audit", "verify").stdout
