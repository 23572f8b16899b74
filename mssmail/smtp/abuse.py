"""Limits on the SMTP dialogue itself (issue 12, hole 12), after Postfix's smtpd.

What a peer can cost us without sending any mail: 2,000 RCPTs to unknown addresses
(directory harvesting) got 2,000 answers; 20,000 NOOPs were answered; a NOOP every
few minutes kept a session open forever. So, per session:

- errors (every 4xx/5xx answer to MAIL, RCPT or DATA): up to `smtp_soft_error_limit`
  answered at once, then each one after a growing delay (`smtp_error_delay` times the
  number past the soft limit, like smtpd_error_sleep_time), and at
  `smtp_hard_error_limit` a 421 and the end of the session (smtpd_hard_error_limit);
- junk commands (NOOP, VRFY, HELP, RSET): `smtp_junk_command_limit` each
  (smtpd_junk_command_limit), every other command `smtp_command_limit`, through
  aiosmtpd's own per-session call limits (421 then close);
- the whole session: `smtp_session_time`, after which the next command gets a 421.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mssmail.smtp import replies

log = logging.getLogger("mss.smtp")
JUNK_COMMANDS = ("NOOP", "VRFY", "HELP", "RSET")
MAX_ERROR_DELAY = 10.0
# Not the peer's errors: our own 421s, and "too many recipients" (RFC 5321 4.5.3.1.10:
# the client is to send the rest in another transaction, as it then does).
NOT_ERRORS = ("421", "452 4.5.3")
Hook = TypeVar("Hook", bound=Callable[..., Awaitable[Any]])


def command_call_limits(limits: Any) -> dict[str, int]:
    """aiosmtpd's `command_call_limit`: per session, per command name ("*": the others)."""
    junk = limits.smtp_junk_command_limit
    return {**dict.fromkeys(JUNK_COMMANDS, junk), "*": limits.smtp_command_limit}


class Dialogue:
    """One session's count of errors and its age (kept on the aiosmtpd protocol object)."""

    def __init__(self, limits: Any) -> None:
        self.limits = limits
        self.started = time.monotonic()
        self.errors = 0

    def too_old(self) -> bool:
        return bool(time.monotonic() - self.started > self.limits.smtp_session_time)

    def error(self) -> tuple[float, bool]:
        """Count one error: (seconds to wait before answering, end the session)."""
        self.errors += 1
        if self.errors >= self.limits.smtp_hard_error_limit:
            return 0.0, True
        past = self.errors - self.limits.smtp_soft_error_limit
        if past <= 0:
            return 0.0, False
        return min(MAX_ERROR_DELAY, past * self.limits.smtp_error_delay), False


def dialogue_of(server: Any, limits: Any) -> Dialogue:
    dialogue = getattr(server, "_mss_dialogue", None)
    if dialogue is None:
        dialogue = Dialogue(limits)
        server._mss_dialogue = dialogue
    return dialogue


def close_after_reply(server: Any) -> None:
    """End the session once the reply being returned is written: aiosmtpd writes a
    hook's answer before it next yields, and a closing transport flushes what it has."""
    transport = server.transport
    if transport is not None:
        asyncio.get_running_loop().call_soon(transport.close)


def guarded(hook: Hook) -> Hook:
    """Wrap a handler hook (self, server, session, envelope, ...) -> reply: enforce the
    session time cap, and count, delay and finally cut error answers."""

    @functools.wraps(hook)
    async def wrapper(self: Any, server: Any, *args: Any, **kwargs: Any) -> Any:
        limits = self.config.limits
        dialogue = dialogue_of(server, limits)
        if dialogue.too_old():
            log.info("SMTP session from %s ended: over smtp_session_time", getattr(server, "peer_ip", "?"))
            close_after_reply(server)
            return replies.render(replies.SESSION_TOO_LONG)
        reply = await hook(self, server, *args, **kwargs)
        if isinstance(reply, str) and reply[:1] in ("4", "5") and not reply.startswith(NOT_ERRORS):
            delay, end = dialogue.error()
            if end:
                log.info("SMTP session from %s ended after %d errors", getattr(server, "peer_ip", "?"),
                         dialogue.errors)
                close_after_reply(server)
                return replies.render(replies.TOO_MANY_ERRORS)
            if delay:
                await asyncio.sleep(delay)
        return reply

    return wrapper  # type: ignore[return-value]
