"""Filters other components plug into the SMTP path (crypto registers here).

- `submission_filters`: f(sender, recipients, data) -> data, on submission before local
  delivery or queueing; may raise `Reject(code, text)` (e.g. 550 5.7.1 when encryption
  is required and a recipient has no certificate).
- `inbound_filters`: f(sender, recipients, data) -> (data, extra), on every delivery into
  a local mailbox; `extra` is kept with the message (Message.extra), e.g. a signature report.

Filters are blocking functions: the SMTP layer runs them on the store's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

SubmissionFilter = Callable[[str, Sequence[str], bytes], bytes]
InboundFilter = Callable[[str, Sequence[str], bytes], tuple[bytes, dict[str, Any]]]

submission_filters: list[SubmissionFilter] = []
inbound_filters: list[InboundFilter] = []


class Reject(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def apply_submission(sender: str, recipients: Sequence[str], data: bytes) -> bytes:
    for submission_filter in submission_filters:
        data = submission_filter(sender, recipients, data)
    return data


def apply_inbound(sender: str, recipients: Sequence[str], data: bytes) -> tuple[bytes, dict[str, Any]]:
    extra: dict[str, Any] = {}
    for inbound_filter in inbound_filters:
        data, more = inbound_filter(sender, recipients, data)
        extra.update(more)
    return data, extra
