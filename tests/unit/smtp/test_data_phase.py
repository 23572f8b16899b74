"""The bulk DATA reader (mssmail/smtp/data.py) against aiosmtpd's own, on loopback.

Both servers are MssSMTP; the reference one keeps aiosmtpd's line-by-line
`smtp_DATA`. Each example sends the same bytes, cut at the same places, to both:
replies and delivered content must be identical, including over-long lines, too
much data, dot-stuffing, bare LF and commands pipelined after the final dot.
"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import patch

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssmail.smtp.server import MssSMTP

SIZE_LIMIT = 4000


class Reference(MssSMTP):
    smtp_DATA = SMTP.smtp_DATA


class StubListener:
    closing = False
    name = "smtp"  # the session logs its outcomes under its listener's name

    def __init__(self) -> None:
        self.sessions: set[Any] = set()

    async def admit(self, session: Any) -> bool:
        return True

    def release(self, session: Any) -> None:
        self.sessions.discard(session)


class Capture:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return "250 2.0.0 OK"


async def exchange(cls: type[MssSMTP], chunks: list[bytes], size_limit: int = SIZE_LIMIT) -> tuple[bytes, list[bytes]]:
    capture = Capture()
    listener = StubListener()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cls(capture, listener=listener, hostname="mx.test", ident="test", decode_data=False,
                    data_size_limit=size_limit, enable_SMTPUTF8=True),
        "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
    transcript = await asyncio.wait_for(reader.read(), 10)  # until the server closes (QUIT)
    writer.close()
    server.close()
    await server.wait_closed()
    return transcript, capture.contents


LINE = st.one_of(
    st.sampled_from([b"", b".", b"..", b".x", b"Subject: t", b"a\nb", b"\r", b"x\r", b" . "]),
    # After an early final ".", the rest is read as commands: no QUIT among them.
    st.binary(max_size=80).map(lambda b: b.replace(b"\r\n", b"")).filter(lambda b: b"QUIT" not in b.upper()),
    st.integers(min_value=995, max_value=1006).map(lambda n: b"A" * n),
    st.integers(min_value=995, max_value=1006).map(lambda n: b"." + b"B" * n),
)


@st.composite
def sessions(draw: st.DrawFn) -> list[bytes]:
    head = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
    lines = draw(st.lists(LINE, max_size=12))
    body = b"".join(line + b"\r\n" for line in lines)
    if draw(st.booleans()):
        body += b"filler\r\n" * draw(st.integers(min_value=0, max_value=600))
    stream = head + body + b".\r\nNOOP\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n.x\r\n.\r\nQUIT\r\n"
    cuts = sorted(draw(st.lists(st.integers(min_value=1, max_value=len(stream) - 1), max_size=6, unique=True)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_bulk_data_reader_matches_aiosmtpd(chunks: list[bytes]):
    async def both() -> tuple[Any, Any]:
        return await exchange(MssSMTP, chunks), await exchange(Reference, chunks)

    # Lines left after an early final "." are unknown commands to both servers: let
    # them all be answered rather than have the connection cut (and reset) at five.
    with patch.object(aiosmtpd.smtp, "BOGUS_LIMIT", 10**6):
        ours, reference = asyncio.run(both())
    assert ours == reference


def test_ten_kilobyte_message_goes_through_in_bulk():
    body = b"".join(b"line %d of a base64-like body, padded to look real......\r\n" % n for n in range(180))
    stream = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n" + b"..dot\r\n" + body + b".\r\nQUIT\r\n"
    transcript, contents = asyncio.run(exchange(MssSMTP, [stream], size_limit=100_000))
    assert contents == [b".dot\r\n" + body]
    assert b"250 2.0.0 OK" in transcript
