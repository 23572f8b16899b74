"""The `mllp` target over TLS (`mllps://host:port`) against a real asyncio TLS MLLP
listener on loopback with a test CA: what it receives parses with python-hl7 to the
sample's values; a receiver requiring a client certificate gets ours (mTLS); an unknown
CA or a name the certificate does not carry fails the handshake, and the job is retried
(a network error), never delivered in clear."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest

from connectors import mllp
from mssmail.store.connectors import DELIVER_KIND, MllpEndpoint
from tests.unit.connectors.peers import Pki, make_pki
from tests.unit.connectors.samples import expected
from tests.unit.connectors.test_hl7v2 import text
from tests.unit.connectors.test_mllp_target import Listener
from tests.unit.connectors.test_runtime import ADMIN, BOX, SAMPLES, _mail, _worker


class TlsListener(Listener):
    """The MLLP receiver of test_mllp_target inside TLS (the server certificate names
    127.0.0.1 and localhost); `clients` keeps the client certificate's subject, if any."""

    def __init__(self, pki: Pki, host: str = "127.0.0.1", require_client_cert: bool = False) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        if require_client_cert:
            self.context.load_verify_locations(pki.ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.host = host
        self.clients: list[object] = []
        super().__init__()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._tls_handle, self.host, 0, ssl=self.context))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _tls_handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer.get_extra_info("peercert"))
        await self._handle(reader, writer)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_listener(pki: Pki) -> Iterator[TlsListener]:
    server = TlsListener(pki)
    yield server
    server.close()


def _route(store, tmp_path: Path, target: str, options: dict[str, str]):
    store.create_mailbox(BOX)
    store.add_connector_rule(ADMIN, BOX, "mllp", [target], match={"kind": "hprim_net"}, options=options)
    store.deliver(_mail([("r.hpr", (SAMPLES / "hprnet_01_abnormal.hpr").read_bytes())]), [BOX],
                  sender="lab@b.example")
    worker = _worker(store, tmp_path)
    assert worker.run_once()  # route
    return worker


def test_mllps_delivers_an_oru_that_parses_to_the_sample(store, tmp_path: Path, pki: Pki,
                                                         tls_listener: TlsListener) -> None:
    worker = _route(store, tmp_path, f"mllps://localhost:{tls_listener.port}", {"ca_file": str(pki.ca)})
    assert worker.run_once()
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "done" and job.progress["outcome"] == "AA", job.last_error
    (received,) = tls_listener.received
    message = hl7.parse(received.decode("utf-8"))
    want = expected("hprnet_01_abnormal")["records"][0]
    assert str(message.segment("MSH")[10]) == job.key[:20] == job.progress["control_id"]
    pid = message.segment("PID")
    assert text(message, pid[5][0][0]) == want["patient"]["last_name"]
    assert str(pid[7]) == want["patient"]["birth_date"].replace("-", "")
    assert tls_listener.clients == [None]  # no client certificate asked, none sent


def test_mllps_mtls_client_certificate(store, tmp_path: Path, pki: Pki) -> None:
    server = TlsListener(pki, require_client_cert=True)
    try:
        message = b"MSH|^~\\&|MSS||DUI||20260312||ORU^R01|CTRL42|P|2.5\rPID|1\r"
        target = f"mllps://127.0.0.1:{server.port}"
        # without our certificate the receiver ends the handshake: retried, nothing received
        with pytest.raises(mllp.MllpError):
            mllp.deliver(target, message, 5, {"ca_file": str(pki.ca)})
        assert server.received == []
        ack = mllp.deliver(target, message, 5, {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                                                "key_file": str(pki.client_key)})
        assert (ack.code, ack.control_id) == ("AA", "CTRL42")
        assert server.received == [message]
        subject = dict(x[0] for x in server.clients[-1]["subject"])  # type: ignore[index]
        assert subject["commonName"] == "client"
    finally:
        server.close()


def test_mllps_unknown_ca_is_retried_and_nothing_is_sent(store, tmp_path: Path, tls_listener: TlsListener) -> None:
    # the system's CAs do not know the test CA
    worker = _route(store, tmp_path, f"mllps://127.0.0.1:{tls_listener.port}", {})
    assert worker.run_once()
    (job,) = store.list_jobs(kind=DELIVER_KIND)
    assert job.state == "failed" and job.attempts == 1  # "failed": to be retried, not dead
    assert "TLS certificate not accepted" in job.last_error
    assert tls_listener.received == []


def test_mllps_wrong_host_name_is_refused(pki: Pki) -> None:
    # the certificate names 127.0.0.1 and localhost; the receiver listens on 127.0.0.2
    server = TlsListener(pki, host="127.0.0.2")
    try:
        with pytest.raises(mllp.MllpError, match=r"TLS certificate not accepted.*(mismatch|match)"):
            mllp.deliver(f"mllps://127.0.0.2:{server.port}", b"MSH|^~\\&|A||B||1||ORU^R01|C1|P|2.5\r", 5,
                         {"ca_file": str(pki.ca)})
        assert server.received == []
    finally:
        server.close()


def test_mllp_target_forms_and_rule_validation(store) -> None:
    assert mllp.parse_url("mllps://[::1]:2575") == MllpEndpoint("::1", 2575, True)
    assert mllp.parse_url("mllp://h.example:2575/") == MllpEndpoint("h.example", 2575, False)
    assert mllp.parse_url("h.example:2575") == MllpEndpoint("h.example", 2575, False)
    for bad in ("https://h:1", "mllps://h", "mllps://h:0", "mllps://h:1/x:2", "h"):
        with pytest.raises(ValueError):
            mllp.parse_url(bad)
    store.create_mailbox(BOX)
    rule = store.add_connector_rule(ADMIN, BOX, "mllp", ["mllps://h.example:2575"],
                                    options={"ca_file": "/etc/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem"})
    assert rule.targets == ("mllps://h.example:2575",)
    with pytest.raises(ValueError, match="mllps"):
        store.add_connector_rule(ADMIN, BOX, "mllp", ["h.example:2575"], options={"ca_file": "/etc/ca.pem"})
    with pytest.raises(ValueError):
        store.add_connector_rule(ADMIN, BOX, "mllp", ["smtp://h.example:25"])
    with pytest.raises(ValueError, match="unknown option"):
        store.add_connector_rule(ADMIN, BOX, "mllp", ["mllps://h.example:2575"], options={"token_file": "/t"})
