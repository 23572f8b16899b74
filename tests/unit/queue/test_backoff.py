from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mssmail.queue import backoff


def test_doubles_then_caps():
    delays = [backoff.retry_delay(n, 60, 3600) for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_no_delay_before_a_failure():
    assert backoff.retry_delay(0, 60, 3600) == 0


def test_next_attempt_never_past_expiry():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    now = created + timedelta(seconds=290)
    when = backoff.next_attempt(now, created, 5, initial=60, max_interval=3600, max_age=300)
    assert when == created + timedelta(seconds=300)
    assert backoff.expired(when, created, 300)
    assert not backoff.expired(now, created, 300)


@given(st.integers(1, 10_000), st.integers(1, 10**6), st.integers(0, 10**7))
def test_delay_is_bounded_and_monotonic(attempts, initial, max_interval):
    d = backoff.retry_delay(attempts, initial, max_interval)
    assert 1 <= d <= max(initial, max_interval)
    assert backoff.retry_delay(attempts + 1, initial, max_interval) >= d
