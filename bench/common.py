"""Shared pieces of the benchmark programs: timing, rows, ceilings.

Every figure is printed beside the machine ceiling it is bounded by, measured
in the same run (the VM drifts +-30 % between runs, so only same-run ratios
mean anything).
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass
class Row:
    """One measured figure beside the ceiling (or baseline) it is judged against."""

    group: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline_value: float = 0.0
    target: str = ""  # e.g. ">= 2.0x" (ratio value/baseline); empty: informational

    @property
    def ratio(self) -> float | None:
        if not self.baseline_value:
            return None
        return self.value / self.baseline_value

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the target (None when there is no target)."""
        if not self.target or self.ratio is None:
            return None
        op, _, num = self.target.partition(" ")
        want = float(num.rstrip("x"))
        return self.ratio >= want if op == ">=" else self.ratio <= want

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        d["met"] = self.met
        return d


def median_time(fn: Callable[[], object], repeat: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (GC off while timing)."""
    for _ in range(warmup):
        fn()
    times = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return statistics.median(times)


def gbps(nbytes: int, seconds: float) -> float:
    """Throughput in GB/s (10**9 bytes per second)."""
    return nbytes / seconds / 1e9


def memcpy_gbps(nbytes: int, repeat: int = 7) -> float:
    """The memcpy ceiling: ``np.copyto`` of ``nbytes`` into a reused, pre-touched buffer."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.zeros_like(src)
    return gbps(src.nbytes, median_time(lambda: np.copyto(dst, src), repeat))
