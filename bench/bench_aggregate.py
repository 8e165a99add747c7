"""Aggregation and quantization kernels vs numpy and the memcpy ceiling (same run).

Weighted sum of 8 updates (8 x 32M float32; quick: 8 x 4M), float16 updates
into a float32 accumulator, coordinate median / trimmed mean of 8 x 4M, and
int8 quantize / dequantize.  Throughput is GB/s of *input* bytes read.
"""

from __future__ import annotations

import numpy as np
from common import Row, gbps, median_time, memcpy_gbps

from cellnet.native import aggregate as agg
from cellnet.native import quantize as qz

K = 8
GROUP = "aggregate"


def _weighted_sum_rows(xs, ws, repeat: int, label: str) -> list[Row]:
    n = xs[0].size
    nbytes = sum(x.nbytes for x in xs)
    acc = np.zeros(n, np.float32)
    tmp = np.empty(n, np.float32)
    w32 = [np.float32(w) for w in ws]

    def np_naive():
        for w, x in zip(w32, xs, strict=True):
            acc.__iadd__(w * x)

    def np_best():
        for w, x in zip(w32, xs, strict=True):
            np.multiply(x, w, out=tmp)
            np.add(acc, tmp, out=acc)

    def one_pass_each():
        for w, x in zip(ws, xs, strict=True):
            agg.accumulate(acc, x, w)

    def fused():
        agg.accumulate_many(acc, xs, ws)

    best = gbps(nbytes, median_time(np_best, repeat))
    naive = gbps(nbytes, median_time(np_naive, repeat))
    one = gbps(nbytes, median_time(one_pass_each, repeat))
    fus = gbps(nbytes, median_time(fused, repeat))
    mem = memcpy_gbps(nbytes, repeat)
    name = f"{label} numpy best (out=)"
    rows = [
        Row(GROUP, f"{label} numpy naive acc += w*x", naive, "GB/s", name, best),
        Row(GROUP, f"{label} numpy best (out=)", best, "GB/s", "memcpy", mem),
        Row(GROUP, f"{label} native one pass per input", one, "GB/s", name, best),
        Row(GROUP, f"{label} native fused over {K}", fus, "GB/s", name, best, ">= 2.0x"),
        # Informational: reading x and read-modify-writing acc moves 1 + 2*acc/x bytes per
        # input byte against memcpy's 2, so f32 tops out near 0.67x of memcpy here.
        Row(GROUP, f"{label} native one pass per input (traffic-bound)", one, "GB/s", "memcpy",
            mem),
        Row(GROUP, f"{label} native fused over {K}", fus, "GB/s", "memcpy", mem, ">= 0.7x"),
    ]
    return rows


def _robust_rows(xs, repeat: int) -> list[Row]:
    nbytes = sum(x.nbytes for x in xs)
    stacked = np.stack(xs)
    out = np.empty(xs[0].size, np.float32)
    t = 2
    np_med = gbps(nbytes, median_time(lambda: np.median(stacked, axis=0), repeat))
    np_tm = gbps(nbytes, median_time(
        lambda: np.sort(stacked, axis=0)[t:K - t].mean(axis=0), repeat))
    med = gbps(nbytes, median_time(lambda: agg.median(xs, out=out), repeat))
    tm = gbps(nbytes, median_time(lambda: agg.trimmed_mean(xs, t, out=out), repeat))
    return [
        Row(GROUP, f"median of {K} (f32)", med, "GB/s", "np.median(axis=0)", np_med, ">= 2.0x"),
        Row(GROUP, f"trimmed mean of {K}, trim {t}", tm, "GB/s", "numpy sort+slice mean",
            np_tm, ">= 2.0x"),
    ]


def _np_quantize(x: np.ndarray, block: int):
    blocks = x.reshape(-1, block)
    amax = np.abs(blocks).max(axis=1)
    scales = (amax / np.float32(127)).astype(np.float32)
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax > 0)
    q = np.rint(blocks * inv[:, None]).astype(np.int8)
    return q.reshape(-1), scales


def _quant_rows(x: np.ndarray, repeat: int) -> list[Row]:
    block = qz.DEFAULT_BLOCK
    q, s = qz.quantize_int8(x, block)
    nq = gbps(x.nbytes, median_time(lambda: _np_quantize(x, block), repeat))
    cq = gbps(x.nbytes, median_time(lambda: qz.quantize_int8(x, block), repeat))
    nd = gbps(q.nbytes, median_time(
        lambda: (q.reshape(-1, block).astype(np.float32) * s[:, None]).reshape(-1), repeat))
    cd = gbps(q.nbytes, median_time(lambda: qz.dequantize_int8(q, s, x.size, block), repeat))
    n16 = gbps(x.nbytes, median_time(lambda: x.astype(np.float16), repeat))
    c16 = gbps(x.nbytes, median_time(lambda: qz.to_float16(x), repeat))
    mem = memcpy_gbps(x.nbytes, repeat)
    return [
        Row(GROUP, f"int8 quantize (block {block})", cq, "GB/s", "numpy blockwise", nq,
            ">= 2.0x"),
        Row(GROUP, f"int8 quantize (block {block})", cq, "GB/s", "memcpy", mem),
        Row(GROUP, "int8 dequantize -> f32 (GB/s of int8)", cd, "GB/s", "numpy blockwise", nd,
            ">= 2.0x"),
        Row(GROUP, "f32 -> f16 convert", c16, "GB/s", "numpy astype", n16, ">= 1.0x"),
    ]


def run(quick: bool) -> list[Row]:
    n = (4 if quick else 32) * 2**20
    repeat = 3 if quick else 7
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(n, dtype=np.float32) for _ in range(K)]
    ws = [float(w) for w in rng.uniform(0.5, 2.0, K)]
    rows = _weighted_sum_rows(xs, ws, repeat, f"{K}x{n >> 20}M f32")
    hs = [x.astype(np.float16) for x in xs]
    del xs
    rows += _weighted_sum_rows(hs, ws, repeat, f"{K}x{n >> 20}M f16->f32")
    m = 4 * 2**20
    ys = [h[:m].astype(np.float32) for h in hs]
    del hs
    rows += _robust_rows(ys, 3)
    rows += _quant_rows(ys[0], repeat)
    return rows


if __name__ == "__main__":
    import sys

    from run import print_table

    print_table(run(quick="--quick" in sys.argv))
