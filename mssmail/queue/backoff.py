"""Retry schedule of the outbound queue (pure).

Exponential backoff: retry_initial, then doubling, capped at retry_max_interval; never
past the message's expiry (created + max_age), so that a message gives up on time.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def retry_delay(attempts: int, initial: int, max_interval: int) -> int:
    """Seconds to wait after the `attempts`-th failed attempt (1 = first failure)."""
    if attempts < 1:
        return 0
    initial = max(1, initial)
    cap = max(initial, max_interval)
    # Bounded exponent: 2**62 seconds would overflow a timedelta long before the cap bites.
    return min(cap, initial * (2 ** min(attempts - 1, 40)))


def next_attempt(now: datetime, created: datetime, attempts: int, *, initial: int,
                 max_interval: int, max_age: int) -> datetime:
    """When to try again, clamped to the expiry time."""
    when = now + timedelta(seconds=retry_delay(attempts, initial, max_interval))
    return min(when, expiry(created, max_age))


def expiry(created: datetime, max_age: int) -> datetime:
    return created + timedelta(seconds=max_age)


def expired(now: datetime, created: datetime, max_age: int) -> bool:
    return now >= expiry(created, max_age)
