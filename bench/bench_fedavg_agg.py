"""FL building blocks on a whole model: in-time FedAvg round, filters, vs same-run baselines.

A model of 16 float32 tensors (64M parameters; quick: 8M).  FedAvg folds 8
client updates in as they arrive (``InTimeFedAvg.accept`` per client, then
``aggregate``) against numpy doing the same weighted mean with ``out=``
buffers; the filters (int8 quantize + dequantize, Gaussian privacy) run
against memcpy and against numpy's own noise generation.  GB/s of float32
input read.
"""

from __future__ import annotations

import numpy as np
from common import Row, gbps, median_time, memcpy_gbps

from cellnet.defs import MetaKey
from cellnet.fl.aggregators import InTimeFedAvg
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.filters import Dequantize, GaussianPrivacy, Quantize

K = 8
TENSORS = 16
GROUP = "fl"


def _model(params: int, rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    per = params // TENSORS
    return {f"layer{i}.w": rng.standard_normal(per, dtype=np.float32) * np.float32(scale)
            for i in range(TENSORS)}


def _fedavg_rows(updates: list[DXO], weights: list[float], repeat: int) -> list[Row]:
    nbytes = sum(u.nbytes for u in updates)
    agg = InTimeFedAvg()

    def ours():
        agg.reset()
        for i, u in enumerate(updates):
            agg.accept(u, f"site-{i}")
        return agg.aggregate()

    names = list(updates[0].data)
    acc = {n: np.zeros_like(updates[0].data[n]) for n in names}
    tmp = {n: np.empty_like(updates[0].data[n]) for n in names}
    w32 = [np.float32(w) for w in weights]
    total = np.float32(sum(weights))

    def numpy_best():
        for n in names:
            acc[n].fill(0)
        for w, u in zip(w32, updates, strict=True):
            for n in names:
                np.multiply(u.data[n], w, out=tmp[n])
                np.add(acc[n], tmp[n], out=acc[n])
        return {n: acc[n] / total for n in names}

    mine = gbps(nbytes, median_time(ours, repeat))
    base = gbps(nbytes, median_time(numpy_best, repeat))
    mem = memcpy_gbps(nbytes // K, repeat)
    return [
        # Updates arrive one by one, so no fused pass over all K is possible: each accept
        # is one memory-bound pass (read x, read-modify-write acc), as numpy's best is.
        Row(GROUP, f"InTimeFedAvg round, {K} updates", mine, "GB/s", "numpy best (out=)", base,
            ">= 1.0x"),
        Row(GROUP, f"InTimeFedAvg round, {K} updates", mine, "GB/s", "memcpy", mem),
    ]


def _filter_rows(update: DXO, repeat: int) -> list[Row]:
    nbytes = update.nbytes
    quant, deq = Quantize("int8"), Dequantize()
    q = quant.process(update)
    gp = GaussianPrivacy(clip_norm=1.0, noise_multiplier=1.0, seed=0)
    rng = np.random.default_rng(0)
    shapes = [a.shape for a in update.data.values()]
    mem = memcpy_gbps(nbytes, repeat)
    tq = gbps(nbytes, median_time(lambda: quant.process(update), repeat))
    td = gbps(nbytes, median_time(lambda: deq.process(q), repeat))
    tg = gbps(nbytes, median_time(lambda: gp.process(update), repeat))
    noise = gbps(nbytes, median_time(
        lambda: [rng.standard_normal(s, dtype=np.float32) for s in shapes], repeat))
    return [
        Row(GROUP, "Quantize int8 filter (model)", tq, "GB/s", "memcpy", mem),
        Row(GROUP, "Dequantize int8 filter (model)", td, "GB/s", "memcpy", mem),
        Row(GROUP, "GaussianPrivacy filter (clip + noise)", tg, "GB/s",
            "numpy noise generation alone", noise, ">= 0.6x"),
    ]


def run(quick: bool) -> list[Row]:
    params = (8 if quick else 64) * 2**20
    repeat = 3 if quick else 5
    rng = np.random.default_rng(0)
    weights = [float(w) for w in rng.integers(10, 100, K)]
    updates = [DXO(DataKind.WEIGHT_DIFF, _model(params, rng, 1e-3),
                   {MetaKey.NUM_STEPS_CURRENT_ROUND: w}) for w in weights]
    rows = _fedavg_rows(updates, weights, repeat)
    rows += _filter_rows(updates[0], repeat)
    return rows


if __name__ == "__main__":
    import sys

    from run import print_table

    print_table(run(quick="--quick" in sys.argv))
