"""Client command framing, sans-IO: bytes in, complete commands (or refusals) out.

An IMAP command is one line, unless it carries literals (RFC 3501 section 4.3): a line
ending in `{n}` is followed by exactly n octets and then the rest of the command. A
synchronizing literal waits for the server's "+" continuation; a non-synchronizing one
`{n+}` (RFC 7888, LITERAL+) follows at once. This reader enforces the limits before
buffering anything: the length of each line, the size of each literal and of the whole
command. The command comes out in its wire form (literal markers and octets inline),
which `mssmail.imap.grammar` parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LITERAL_MARK = re.compile(rb"\{(\d{1,20})(\+?)\}\Z")
_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]{1,64}")


@dataclass(frozen=True)
class Command:
    """A complete command in wire form, without its final CRLF."""

    raw: bytes


@dataclass(frozen=True)
class Continue:
    """The client waits for "+" before sending a synchronizing literal of `size` octets."""

    size: int


@dataclass(frozen=True)
class Refused:
    """A command refused by the framing limits; answered `tag BAD ...` (or untagged)."""

    tag: bytes | None
    reason: str
    code: str = ""  # response code, e.g. "TOOBIG"


@dataclass(frozen=True)
class Fatal:
    """The connection cannot be kept in sync (a non-synchronizing literal over the limit)."""

    reason: str


Event = Command | Continue | Refused | Fatal


def tag_of(line: bytes) -> bytes | None:
    """The tag at the start of `line`, if it looks like one (RFC 3501 `tag`)."""
    match = _TAG.match(line)
    return match.group(0) if match else None


class CommandReader:
    """Framing state machine for one connection."""

    def __init__(self, max_line: int, max_literal: int, max_command: int | None = None) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command if max_command is not None else max_literal + 4 * max_line
        self._buf = bytearray()  # bytes received but not yet framed
        self._cmd = bytearray()  # the command so far, in wire form
        self._literal = 0  # octets of literal still expected
        self._skipping = False  # discarding an overlong line up to its LF
        self._skip_tag: bytes | None = None
        self.closed = False

    def reset(self) -> None:
        """Drop everything buffered (after STARTTLS: plaintext sent ahead is not trusted)."""
        self._buf.clear()
        self._cmd.clear()
        self._literal = 0
        self._skipping = False

    @property
    def pending(self) -> int:
        """Octets received and held (for flow control)."""
        return len(self._buf) + len(self._cmd)

    @property
    def committed(self) -> int:
        """Octets held plus those of the literal announced and not yet received: what
        this connection will hold once the client sends what it said it would."""
        return len(self._buf) + len(self._cmd) + self._literal

    def cancel_literal(self) -> bytes | None:
        """Give up the synchronizing literal just announced (its "+" is not sent, RFC 3501
        section 7.5: a tagged answer ends the command instead); the command's tag."""
        tag = tag_of(bytes(self._cmd[:80]))
        self._cmd.clear()
        self._literal = 0
        return tag

    @property
    def in_command(self) -> bool:
        """Whether part of a command has been received."""
        return bool(self._cmd) or self._literal > 0

    def feed(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        self._buf += data
        events: list[Event] = []
        while self._buf and not self.closed:
            if self._literal:
                take = min(self._literal, len(self._buf))
                self._cmd += self._buf[:take]
                del self._buf[:take]
                self._literal -= take
                continue
            end = self._buf.find(b"\n")
            if self._skipping:
                if end < 0:
                    self._buf.clear()
                    break
                del self._buf[:end + 1]
                self._skipping = False
                events.append(Refused(self._skip_tag, "Command line too long", "TOOBIG"))
                continue
            if end < 0:
                if len(self._buf) > self.max_line:
                    self._overlong()
                break
            if end > self.max_line:
                self._skip_tag = tag_of(bytes(self._cmd or self._buf[:80]))
                del self._buf[:end + 1]
                self._cmd.clear()
                events.append(Refused(self._skip_tag, "Command line too long", "TOOBIG"))
                continue
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _overlong(self) -> None:
        self._skip_tag = tag_of(bytes(self._cmd or self._buf[:80]))
        self._skipping = True
        self._buf.clear()
        self._cmd.clear()

    def _line(self, line: bytes) -> Event | None:
        self._cmd += line
        if len(self._cmd) > self.max_command:
            tag = tag_of(bytes(self._cmd[:80]))
            self._cmd.clear()
            return Refused(tag, "Command too long", "TOOBIG")
        mark = _LITERAL_MARK.search(line)
        if mark is None:
            raw = bytes(self._cmd)
            self._cmd.clear()
            return Command(raw)
        size = int(mark.group(1))
        synchronizing = not mark.group(2)
        if size > self.max_literal or len(self._cmd) + size > self.max_command:
            tag = tag_of(bytes(self._cmd[:80]))
            self._cmd.clear()
            if synchronizing:
                # RFC 3501 section 7.5: refusing the continuation ends the command.
                return Refused(tag, f"Literal too large (at most {self.max_literal} octets)", "TOOBIG")
            # RFC 7888 section 4: the octets are already on their way and cannot be told
            # apart from commands, so the connection ends.
            self.closed = True
            return Fatal(f"Non-synchronizing literal too large (at most {self.max_literal} octets)")
        self._cmd += b"\r\n"
        self._literal = size
        return Continue(size) if synchronizing else None
