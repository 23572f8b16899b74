"""The DATA phase (RFC 5321 4.1.1.4, 4.5.2) as aiosmtpd 1.4 reads it, whole lines in bulk.

aiosmtpd awaits `readuntil(b"\\r\\n")` once per line: a 10 KB message with a base64
attachment is ~140 awaits, the largest single cost of an aiosmtpd server. Here the
lines already buffered by the stream reader are taken in one piece whenever aiosmtpd's
own loop would have accepted each of them unchanged: complete, at a line start, not
the final ".", not longer than its line limit, not past the size limit. Anything else
(an over-long line, too much data, the end) goes through aiosmtpd's line-by-line
logic, copied below, so that every reply and every stored byte is the same (a
property test feeds both the same streams).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiosmtpd.smtp import MISSING, _DataState

if TYPE_CHECKING:
    from mssmail.smtp.server import MssSMTP

log = logging.getLogger("mail.log")

OVER_BUDGET = "452 4.3.1 Server busy: too much mail arriving at once, try again later"


def _unstuff(block: bytes) -> bytes:
    """Dot-unstuff whole lines (RFC 5321 4.5.2); `block` starts at a line start."""
    if block[:1] == b".":
        block = block[1:]
    return block.replace(b"\r\n.", b"\r\n")


def bulk_size(buffer: bytearray, num_bytes: int, size_limit: int | None, line_limit: int) -> int:
    """How many buffered bytes aiosmtpd would accept as plain lines, or -1 when a line
    in there needs its line-by-line handling (too long, or the size limit reached)."""
    end = buffer.rfind(b"\r\n")
    if end < 0 or buffer[:3] == b".\r\n":
        return 0
    size = end + 2
    final = buffer.find(b"\r\n.\r\n", 0, size)
    if final >= 0:
        size = final + 2
    if size_limit and num_bytes + size > size_limit:
        return -1
    if max(map(len, buffer[:size].split(b"\r\n"))) + 2 > line_limit:
        return -1
    return size


async def read_data(server: MssSMTP) -> tuple[_DataState, bytes]:
    """The message after "354", dot-unstuffed, and whether it was within limits."""
    reader = server._reader
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    data: list[bytes] = []
    num_bytes = 0
    limit = server.data_size_limit
    line_fragments: list[bytes] = []
    state = _DataState.NOMINAL
    bulk = True
    budget = server.input_budget
    while server.transport is not None:
        if (budget is not None and state == _DataState.NOMINAL and not server.over_budget and num_bytes
                and not budget.hold(server, num_bytes)):
            # The process holds too much unfinished input (mssmail.limits.BufferBudget,
            # shared with IMAP and LDAP): this message is read to its end and dropped,
            # then refused as a temporary failure (452), so nothing grows and the client
            # retries later (RFC 5321 4.2.5: 4yz, the mail is not lost).
            server.over_budget = True
            data *= 0
            bulk = False
        if bulk and not line_fragments and state == _DataState.NOMINAL:
            size = bulk_size(buffer, num_bytes, limit, server.line_length_limit)
            if size < 0:
                bulk = False  # this message goes line by line from here
            elif size:
                block = await reader.readexactly(size)  # already buffered: no wait
                num_bytes += size
                if not server.over_budget:
                    data.append(_unstuff(block))
                continue
        # From here to the end of the loop: aiosmtpd 1.4.6 SMTP.smtp_DATA, unchanged.
        try:
            line: bytes = await reader.readuntil(b"\r\n")
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            server._writer.close()
            raise
        except asyncio.LimitOverrunError as e:
            if state == _DataState.NOMINAL:
                state = _DataState.TOO_LONG
            data *= 0
            line = await reader.read(e.consumed)
        if not line_fragments and line == b".\r\n":
            break
        num_bytes += len(line)
        if state == _DataState.NOMINAL and limit and num_bytes > limit:
            state = _DataState.TOO_MUCH
            data *= 0
        line_fragments.append(line)
        if line.endswith(b"\r\n"):
            if state == _DataState.NOMINAL:
                line = b"".join(line_fragments)
                if len(line) > server.line_length_limit:
                    state = _DataState.TOO_LONG
                    data *= 0
                elif not server.over_budget:
                    data.append(line[1:] if line[:1] == b"." else line)
            line_fragments *= 0
    return state, b"".join(data)


def _after_data(server: MssSMTP) -> None:
    """aiosmtpd's end of a transaction (envelope reset, session state), untyped there."""
    server._set_post_data_state()  # type: ignore[no-untyped-call]


async def smtp_DATA(server: MssSMTP, arg: str) -> None:
    """aiosmtpd 1.4.6's DATA command with `read_data` (decode_data=False only)."""
    if await server.check_helo_needed():
        return
    if await server.check_auth_needed("DATA"):
        return
    assert server.envelope is not None
    if not server.envelope.rcpt_tos:
        await server.push("503 Error: need RCPT command")
        return
    if arg:
        await server.push("501 Syntax: DATA")
        return
    await server.push("354 End data with <CR><LF>.<CR><LF>")
    try:
        await _data_and_reply(server)
    finally:
        server.over_budget = False
        if server.input_budget is not None:
            server.input_budget.drop(server)  # the message is stored, refused or gone


async def _data_and_reply(server: MssSMTP) -> None:
    assert server.envelope is not None
    state, original_content = await read_data(server)
    if server.over_budget and state == _DataState.NOMINAL:
        await server.push(OVER_BUDGET)
        _after_data(server)
        return
    if state != _DataState.NOMINAL:
        if state == _DataState.TOO_LONG:
            await server.push("500 Line too long (see RFC5321 4.5.3.1.6)")
        elif state == _DataState.TOO_MUCH:
            await server.push("552 Error: Too much mail data")
        _after_data(server)
        return
    server.envelope.content = original_content
    server.envelope.original_content = original_content
    status = await server._call_handler_hook("DATA") if "DATA" in server._handle_hooks else MISSING
    _after_data(server)
    await server.push("250 OK" if status is MISSING else status)
