"""Capped exponential backoff with full jitter, and a connect loop that uses it on trio's clock.

Delay ``n`` (from 0) is drawn uniformly from ``[0, min(cap, base * factor**n)]``
("full jitter"): peers that lost the same server do not come back in step.
The schedule is a pure iterator over an injectable ``random.Random``, so it is
tested deterministically; the sleeping is done by :func:`connect_with_retry`
with ``trio.sleep``, so tests run it on a ``MockClock``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import trio

from cellnet.errors import LinkError

__all__ = ["Backoff", "connect_with_retry"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Backoff:
    """Iterator of retry delays in seconds: capped exponential growth with full jitter."""

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 30.0,
        factor: float = 2.0,
        *,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (("base", base), ("cap", cap), ("factor", factor)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if base <= 0:
            raise ValueError(f"base must be > 0, got {base!r}")
        if cap < base:
            raise ValueError(f"cap ({cap!r}) must be >= base ({base!r})")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor!r}")
        self.base, self.cap, self.factor = float(base), float(cap), float(factor)
        self._rng = rng if rng is not None else random.Random()
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt ``attempt`` (from 0) can draw."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # compare exponents, not powers, so a huge attempt number cannot overflow
        if attempt * math.log(self.factor) >= math.log(self.cap / self.base):
            return self.cap
        return min(self.cap, self.base * self.factor**attempt)

    def next_delay(self) -> float:
        """Draw the next delay and advance the attempt counter."""
        delay = self._rng.uniform(0.0, self.ceiling(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the smallest delay (after a success)."""
        self.attempt = 0

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        return self.next_delay()


RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,  # includes LinkError and refused/unreachable connections
    trio.BrokenResourceError,
    trio.TooSlowError,
)


async def connect_with_retry(
    connect: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff | None = None,
    max_attempts: int | None = None,
    retry_on: tuple[type[BaseException], ...] = RETRYABLE,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await ``connect()`` until it succeeds, sleeping a backoff delay after each failure.

    Only exceptions in ``retry_on`` are retried (authentication errors are not:
    they will not fix themselves).  After ``max_attempts`` failed attempts the
    last error is raised as a :class:`LinkError`.  Bound the whole loop with
    ``trio.fail_after`` / ``move_on_after`` around the call.
    """
    if max_attempts is not None and (isinstance(max_attempts, bool) or max_attempts < 1):
        raise ValueError(f"max_attempts must be >= 1 or None, got {max_attempts!r}")
    backoff = backoff if backoff is not None else Backoff()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await connect()
        except retry_on as exc:
            if max_attempts is not None and attempt >= max_attempts:
                raise LinkError(f"giving up after {attempt} attempts: {exc}") from exc
            delay = backoff.next_delay()
            log.info("connect attempt %d failed (%s); retrying in %.3fs", attempt, exc, delay)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await trio.sleep(delay)
