"""Cell statistics (sans-IO counters): traffic per channel, request latency histogram, errors.

``Cell.statistics()`` returns a :class:`CellStatistics` snapshot, trio-style:
a frozen value that the caller may keep, compare or print (``show_stats``).
Bytes are payload bytes (headers and framing are not counted), so the numbers
mean the same on every transport.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["CellStatistics", "ChannelStats", "LatencyHistogram", "StatsRecorder", "payload_nbytes"]

#: Upper bound of the first latency bucket, in seconds (1 microsecond).
_FIRST_BUCKET = 1e-6
#: Buckets double in width: 1 us, 2 us, 4 us, ... up to about 2**30 us (~18 min), then overflow.
_N_BUCKETS = 32


def payload_nbytes(payload: Any) -> int:
    """Bytes a message payload carries (0 for None, the sum of array sizes for tensors)."""
    if payload is None:
        return 0
    if type(payload) is bytes:
        return len(payload)
    if isinstance(payload, Mapping):
        return sum(int(arr.nbytes) for arr in payload.values())
    try:
        return memoryview(payload).nbytes
    except TypeError:  # e.g. what a receive-into-place stream sink returned
        return int(getattr(payload, "nbytes", 0))


class LatencyHistogram:
    """Counts of durations in log2 buckets: bucket i holds (2**(i-1), 2**i] microseconds."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_N_BUCKETS + 1)  # the last bucket is the overflow bucket
        self.count = 0
        self.total = 0.0

    @staticmethod
    def bucket_of(seconds: float) -> int:
        """Index of the bucket a duration falls in."""
        if seconds <= _FIRST_BUCKET:
            return 0
        return min(_N_BUCKETS, math.ceil(math.log2(seconds / _FIRST_BUCKET)))

    @staticmethod
    def upper_bound(index: int) -> float:
        """The largest duration (seconds) bucket ``index`` holds; inf for the overflow bucket."""
        return math.inf if index >= _N_BUCKETS else _FIRST_BUCKET * 2.0**index

    def add(self, seconds: float) -> None:
        if not seconds >= 0:  # negative or NaN
            raise ValueError(f"a latency must be a non-negative number, got {seconds!r}")
        self.counts[self.bucket_of(seconds)] += 1
        self.count += 1
        self.total += seconds

    def snapshot(self) -> dict[float, int]:
        """``{bucket upper bound in seconds: count}`` for the non-empty buckets, ascending."""
        return {self.upper_bound(i): n for i, n in enumerate(self.counts) if n}

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the ``q`` quantile (0 when empty)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return self.upper_bound(i)
        return math.inf  # pragma: no cover - counts always sum to count


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelStats:
    """Traffic of one channel as seen by one cell."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class CellStatistics:
    """A snapshot of one cell's counters (what ``show_stats`` prints)."""

    fqcn: str
    peers: tuple[str, ...]
    channels: Mapping[str, ChannelStats]
    latency: Mapping[float, int]
    requests_completed: int
    mean_latency: float
    errors: Mapping[str, int]
    pending_requests: int
    forwarded: int
    queued_bytes: Mapping[str, int]


class StatsRecorder:
    """Mutable counters a cell updates as traffic passes; ``snapshot`` freezes them."""

    def __init__(self) -> None:
        self._channels: dict[str, list[int]] = {}
        self.latency = LatencyHistogram()
        self.errors: Counter[str] = Counter()
        self.forwarded = 0

    def _row(self, channel: Any) -> list[int]:
        row = self._channels.get(channel) if type(channel) is str else None
        if row is None:  # a new channel, or a name that is not a plain str
            key = channel if isinstance(channel, str) else "?"
            row = self._channels.setdefault(key, [0, 0, 0, 0])
        return row

    def message_in(self, channel: Any, nbytes: int) -> None:
        row = self._row(channel)
        row[0] += 1
        row[1] += nbytes

    def messages_in(self, channel: Any, count: int, nbytes: int) -> None:
        """Record ``count`` messages of ``nbytes`` payload bytes in all received on ``channel``."""
        row = self._row(channel)
        row[0] += count
        row[1] += nbytes

    def message_out(self, channel: Any, nbytes: int) -> None:
        row = self._row(channel)
        row[2] += 1
        row[3] += nbytes

    def messages_out(self, channel: Any, count: int, nbytes: int) -> None:
        """Record ``count`` messages of ``nbytes`` payload bytes in all sent on ``channel``."""
        row = self._row(channel)
        row[2] += count
        row[3] += nbytes

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def snapshot(
        self,
        fqcn: str,
        peers: tuple[str, ...],
        pending: int,
        queued: Mapping[str, int],
    ) -> CellStatistics:
        lat = self.latency
        return CellStatistics(
            fqcn=fqcn,
            peers=peers,
            channels={k: ChannelStats(*row) for k, row in sorted(self._channels.items())},
            latency=lat.snapshot(),
            requests_completed=lat.count,
            mean_latency=lat.total / lat.count if lat.count else 0.0,
            errors=dict(self.errors),
            pending_requests=pending,
            forwarded=self.forwarded,
            queued_bytes=dict(queued),
        )
