"""CPU features the native kernels dispatch on, and a switch to force portable code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cellnet.native._loader import lib

_NAMES = {
    "sse4.2": "CN_CPU_SSE42",
    "pclmul": "CN_CPU_PCLMUL",
    "avx2": "CN_CPU_AVX2",
    "fma": "CN_CPU_FMA",
    "f16c": "CN_CPU_F16C",
    "avx512f": "CN_CPU_AVX512F",
    "avx512bw": "CN_CPU_AVX512BW",
    "avx512vl": "CN_CPU_AVX512VL",
    "vpclmulqdq": "CN_CPU_VPCLMUL",
    "arm-crc": "CN_CPU_ARM_CRC",
}


def cpu_features() -> frozenset[str]:
    """Names of the CPU features the native core detected."""
    bits = lib.cn_cpu_features()
    return frozenset(name for name, const in _NAMES.items() if bits & getattr(lib, const))


@contextlib.contextmanager
def forced_portable() -> Iterator[None]:
    """Run the block with every SIMD path disabled (for tests and comparisons)."""
    previous = lib.cn_cpu_set_mask(0)
    try:
        yield
    finally:
        lib.cn_cpu_set_mask(previous)
