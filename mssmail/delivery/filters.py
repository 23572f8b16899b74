"""Filters other components plug into every delivery (crypto registers here).

- `submission_filters`: f(sender, recipients, data, options) -> data, on submission
  (any front end: SMTP, webmail) before local delivery or queueing; `options` is the
  sender's `SubmitOptions` (sign, encrypt), which may only raise the policy. May raise
  `Reject(code, text)` (e.g. 550 5.7.1 when encryption is required and a recipient has
  no certificate): nothing is then stored or queued.
- `inbound_filters`: f(sender, recipients, data) -> (data, extra), on every delivery into
  a local mailbox; `extra` is kept with the message (Message.extra), e.g. a signature report.

Filters are blocking functions: the delivery service runs them on its own thread
(`pipeline.py`), never on the event loop. This module imports nothing of the store: an
SMTP worker process raises and reads `Reject` too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


class Encrypt(enum.IntEnum):
    """`[crypto] encrypt_outgoing`, ordered: a request may only move up this scale."""

    NEVER = 0
    WHEN_POSSIBLE = 1
    REQUIRED = 2

    @classmethod
    def parse(cls, value: str) -> Encrypt:
        return cls[value.strip().upper().replace("-", "_")]

    @property
    def setting(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class SubmitOptions:
    """What the sender asks for on top of the policy (webmail's "Signer", "Chiffrer"):
    `sign = policy.sign or options.sign`, `encrypt = max(policy, options)`
    (never < when-possible < required). SMTP submission asks for nothing more."""

    sign: bool = False
    encrypt: str = "never"

    def __post_init__(self) -> None:
        Encrypt.parse(self.encrypt)  # ValueError/KeyError for anything else

    def raise_policy(self, sign: bool, encrypt: str) -> tuple[bool, str]:
        """(sign, encrypt) of a policy raised by these options, never lowered."""
        return sign or self.sign, max(Encrypt.parse(encrypt), Encrypt.parse(self.encrypt)).setting


NO_OPTIONS = SubmitOptions()

SubmissionFilter = Callable[[str, Sequence[str], bytes, SubmitOptions], bytes]
InboundFilter = Callable[[str, Sequence[str], bytes], tuple[bytes, dict[str, Any]]]

submission_filters: list[SubmissionFilter] = []
inbound_filters: list[InboundFilter] = []


class Reject(Exception):
    """A filter's refusal: `code` (e.g. 550) and `text` starting with the enhanced
    status code (RFC 3463), e.g. "5.7.1 No encryption certificate for ..."."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def apply_submission(sender: str, recipients: Sequence[str], data: bytes,
                     options: SubmitOptions = NO_OPTIONS) -> bytes:
    for submission_filter in submission_filters:
        data = submission_filter(sender, recipients, data, options)
    return data


def apply_inbound(sender: str, recipients: Sequence[str], data: bytes) -> tuple[bytes, dict[str, Any]]:
    extra: dict[str, Any] = {}
    for inbound_filter in inbound_filters:
        data, more = inbound_filter(sender, recipients, data)
        extra.update(more)
    return data, extra
