"""Backoff schedule (seeded, deterministic) and connect_with_retry on a mock clock."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from cellnet.errors import IdentityMismatchError, LinkError
from cellnet.transport import Backoff, connect_with_retry


def test_delays_are_full_jitter_under_a_capped_exponential():
    b = Backoff(base=0.5, cap=4.0, rng=random.Random(7))
    delays = [next(b) for _ in range(12)]
    ceilings = [0.5, 1.0, 2.0, 4.0] + [4.0] * 8
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert b.attempt == 12
    # full jitter: the same seed replays the same schedule, another seed does not
    replay = Backoff(base=0.5, cap=4.0, rng=random.Random(7))
    assert [replay.next_delay() for _ in range(12)] == delays
    other = Backoff(base=0.5, cap=4.0, rng=random.Random(8))
    assert [other.next_delay() for _ in range(12)] != delays


def test_jitter_spreads_over_the_whole_range():
    b = Backoff(base=1.0, cap=1.0, rng=random.Random(1))
    draws = [b.next_delay() for _ in range(2000)]
    assert min(draws) < 0.05 and max(draws) > 0.95
    assert 0.45 < sum(draws) / len(draws) < 0.55


def test_ceiling_and_reset():
    b = Backoff(base=0.1, cap=10.0, factor=3.0, rng=random.Random(0))
    assert b.ceiling(0) == pytest.approx(0.1)
    assert b.ceiling(2) == pytest.approx(0.9)
    assert b.ceiling(10**9) == 10.0  # no overflow for huge attempt numbers
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.attempt == 0


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"base": 0}, ValueError),
        ({"base": 2.0, "cap": 1.0}, ValueError),
        ({"factor": 0.5}, ValueError),
        ({"cap": float("inf")}, ValueError),
        ({"base": "1"}, TypeError),
        ({"base": True}, TypeError),
    ],
)
def test_bad_parameters_are_refused(kw, exc):
    with pytest.raises(exc):
        Backoff(**kw)


async def test_connect_with_retry_sleeps_the_drawn_delays_on_trio_clock(autojump_clock):
    # pytest-trio's autojump_clock is trio.testing.MockClock(autojump_threshold=0)
    assert isinstance(autojump_clock, trio.testing.MockClock)
    calls: list[float] = []
    seen: list[float] = []

    async def flaky():
        calls.append(trio.current_time())
        if len(calls) < 4:
            raise ConnectionRefusedError("nobody home")
        return "link"

    expected = Backoff(base=1.0, cap=8.0, rng=random.Random(3))
    want = [expected.next_delay() for _ in range(3)]
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(3))
    got = await connect_with_retry(flaky, backoff=b, on_retry=lambda n, e, d: seen.append(d))
    assert got == "link"
    assert seen == want
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert gaps == pytest.approx(want)


async def test_gives_up_after_max_attempts_with_link_error(autojump_clock):
    attempts = 0

    async def down():
        nonlocal attempts
        attempts += 1
        raise OSError("unreachable")

    with pytest.raises(LinkError, match="giving up after 3 attempts"):
        await connect_with_retry(down, max_attempts=3, backoff=Backoff(rng=random.Random(0)))
    assert attempts == 3


async def test_auth_errors_are_not_retried(autojump_clock):
    attempts = 0

    async def refused():
        nonlocal attempts
        attempts += 1
        raise IdentityMismatchError("not you")

    with pytest.raises(IdentityMismatchError):
        await connect_with_retry(refused)
    assert attempts == 1


async def test_max_attempts_must_be_positive():
    with pytest.raises(ValueError):
        await connect_with_retry(trio.sleep, max_attempts=0)
