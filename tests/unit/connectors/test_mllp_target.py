"""The `mllp` target against a real asyncio MLLP listener on loopback: AA is done, AE is
a dead letter at once, AR and silence (timeout) are retried, and every attempt of one
job carries the same MSH-10."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import mllp
from mssmail.store.connectors import DELIVER_KIND
from tests.unit.connectors.test_runtime import ADMIN, BOX, SAMPLES, _mail, _worker


class Listener:
    """An MLLP receiver: answers each message with the next of `answers` (`None`: stay
    silent), and keeps what it received."""

    def __init__(self) -> None:
        self.answers: list[str | None] = []
        self.error = ""  # ERR-5 of an AE (the ANS volet's 900-906 codes)
        self.received: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readuntil(mllp.END)
        message = data[1:-2]
        self.received.append(message)
        answer = self.answers.pop(0) if self.answers else "AA"
        if answer is None:
            await asyncio.sleep(5)
        else:
            control = mllp.control_id(message)
            ack = f"MSH|^~\\&|DUI||MSS||20260312||ACK|A{control}|P|2.5\rMSA|{answer}|{control}|test\r"
            if answer == "AE" and self.error:
                ack += f"ERR|||207^Application internal error^HL70357|E|{self.error}\r"
            writer.write(mllp.frame(ack.encode()))
            await writer.drain()
        writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def test_ack_parsing() -> None:
    ack = mllp.parse_ack(mllp.frame(b"MSH|^~\\&|A||B||1||ACK|9|P|2.5\rMSA|AE|CTRL1|bad\rERR|||207|E||||x"))
    assert (ack.code, ack.control_id, ack.permanent, ack.accepted) == ("AE", "CTRL1", True, False)
    for bad in (b"MSA|AA|1", mllp.frame(b"PID|1"), mllp.frame(b"MSH|^~\\&|A")):
        with pytest.raises(mllp.MllpError):
            mllp.parse_ack(bad)
    assert mllp.parse_target("[::1]:2575") == ("::1", 2575)
    with pytest.raises(ValueError):
        mllp.parse_target("host")


def _one_job(store, tmp_path: Path, port: int):
    store.create_mailbox(BOX)
    store.add_connector_rule(ADMIN, BOX, "mllp", [f"127.0.0.1:{port}"], match={"kind": "hprim_net"})
    store.deliver(_mail([("r.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes())]), [BOX],
                  sender="lab@b.example")
    worker = _worker(store, tmp_path)
    worker.run_once()  # route
    return worker


def test_aa_after_ar_and_a_timeout_keeps_one_control_id(store, tmp_path: Path, listener: Listener) -> None:
    listener.answers = ["AR", None, "AA"]
    worker = _one_job(store, tmp_path, listener.port)
    later = datetime.now(UTC)
    for _ in range(3):
        later += timedelta(hours=7)
        assert worker.run_once(now=later)
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "done" and job.progress["outcome"] == "AA" and job.attempts == 3
    assert len(listener.received) == 3
    ids = {mllp.control_id(m) for m in listener.received}
    assert ids == {job.key[:20]}  # one job, one MSH-10, on every attempt
    assert listener.received[0].startswith(b"MSH|") and b"ORU^R01" in listener.received[0]


def test_ae_is_a_dead_letter_at_once(store, tmp_path: Path, listener: Listener) -> None:
    listener.answers = ["AE"]
    worker = _one_job(store, tmp_path, listener.port)
    assert worker.run_once()
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "dead" and job.last_error.startswith("AE") and job.attempts == 1
