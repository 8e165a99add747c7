"""CRC32C throughput (large and in-cache) vs zlib.crc32, and per-call binding overhead."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
import zlib

import cffi
import numpy as np
from common import Row, gbps, median_time

from cellnet.native import crc32c, crc32c_impl, forced_portable, lib


def _py_noop(x):
    return x


def _call_ns(fn, arg, calls: int, repeat: int) -> float:
    """Nanoseconds per ``fn(arg)`` call, loop overhead included (as for the baseline)."""

    def loop():
        for _ in range(calls):
            fn(arg)

    return median_time(loop, repeat) / calls * 1e9


def run(quick: bool = False) -> list[Row]:
    big_n = (32 if quick else 256) << 20
    repeat = 3 if quick else 7
    big = np.random.default_rng(1).integers(0, 256, big_n, dtype=np.uint8)
    small = big[: 64 << 10].copy()
    reps_small = 200
    impl = crc32c_impl()
    rows = []

    zl_big = gbps(big_n, median_time(lambda: zlib.crc32(big), repeat))
    ours_big = gbps(big_n, median_time(lambda: crc32c(big), repeat))
    rows.append(Row("crc", f"crc32c {impl} {big_n >> 20} MiB (abs target >= 10 GB/s)", ours_big,
                    "GB/s", "zlib.crc32", zl_big, ">= 2.0x"))

    def many(fn):
        return lambda: [fn(small) for _ in range(reps_small)]

    zl_small = gbps(small.nbytes * reps_small, median_time(many(zlib.crc32), repeat))
    ours_small = gbps(small.nbytes * reps_small, median_time(many(crc32c), repeat))
    rows.append(Row("crc", f"crc32c {impl} 64 KiB in cache", ours_small, "GB/s",
                    "zlib.crc32", zl_small, ">= 2.0x"))

    with forced_portable():
        port = gbps(small.nbytes * reps_small, median_time(many(crc32c), repeat))
    rows.append(Row("crc", "crc32c portable fallback 64 KiB", port, "GB/s", "zlib.crc32",
                    zl_small))

    calls = 20_000 if quick else 200_000
    rows.append(Row("crc", "lib.cn_noop(1) call (abs target <= 1000 ns)",
                    _call_ns(lib.cn_noop, 1, calls, repeat), "ns", "python no-op call",
                    _call_ns(_py_noop, 1, calls, repeat)))
    # Why API mode: the same trivial C call through cffi's ABI mode (dlopen of libc's abs)
    # and through ctypes, measured in the same run.
    abi_ffi = cffi.FFI()
    abi_ffi.cdef("int abs(int);")
    libc_abi = abi_ffi.dlopen(ctypes.util.find_library("c"))
    api_ns = _call_ns(lib.cn_noop, 1, calls, repeat)
    rows.append(Row("crc", "API-mode call vs cffi ABI-mode call (libc abs)", api_ns, "ns",
                    "cffi ABI mode", _call_ns(libc_abi.abs, 1, calls, repeat)))
    libc_ct = ctypes.CDLL(ctypes.util.find_library("c"))
    rows.append(Row("crc", "API-mode call vs ctypes call (libc abs)", api_ns, "ns", "ctypes",
                    _call_ns(libc_ct.abs, 1, calls, repeat)))
    x64 = b"x" * 64
    rows.append(Row("crc", "crc32c(b'x'*64) call", _call_ns(crc32c, x64, calls, repeat), "ns",
                    "zlib.crc32 same", _call_ns(zlib.crc32, x64, calls, repeat)))
    return rows


if __name__ == "__main__":
    t0 = time.perf_counter()
    for r in run(quick=True):
        print(r)
    print(f"{time.perf_counter() - t0:.1f} s")
