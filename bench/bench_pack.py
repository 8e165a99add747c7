"""Tensor pack encode/decode of a dict of 100 float32 arrays vs memcpy and pickle 5."""

from __future__ import annotations

import pickle
import time

import numpy as np
from common import Row, gbps, median_time, memcpy_gbps

from cellnet.native.pack import decode, encode, encode_segments, packed_size

N_TENSORS = 100


def _model(total: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    per = total // N_TENSORS // 4
    return {f"layer{i:03d}.weight": rng.standard_normal(per, dtype=np.float32)
            for i in range(N_TENSORS)}


def run(quick: bool = False) -> list[Row]:
    # 256 MiB even in quick mode: the memcpy ceiling of a cache-resident size (the L3
    # here is 32 MiB) is not the one a model-sized pack meets, and the run is short.
    total = 256 << 20
    repeat = 3 if quick else 7
    model = _model(total)
    payload = sum(a.nbytes for a in model.values())
    meta = {"round": 3, "site": "site-1"}
    g = "pack"
    rows = []

    def rate(fn) -> float:
        return gbps(payload, median_time(fn, repeat))

    # encode ------------------------------------------------------------
    out = np.zeros(packed_size(model, meta), dtype=np.uint8)  # reused, pre-touched
    ceiling = memcpy_gbps(payload, repeat)
    rows.append(Row(g, f"encode into reused buffer ({payload >> 20} MiB, {N_TENSORS} tensors)",
                    rate(lambda: encode(model, meta, out=out)), "GB/s", "memcpy (np.copyto)",
                    ceiling, ">= 0.8x"))
    pk_in = rate(lambda: pickle.dumps(model, protocol=5))
    rows.append(Row(g, "encode into fresh buffer", rate(lambda: encode(model, meta)), "GB/s",
                    "pickle5 in-band dumps", pk_in))

    def pickle_oob():
        bufs = []
        return pickle.dumps(model, protocol=5, buffer_callback=bufs.append), bufs

    rows.append(Row(g, "encode_segments (zero-copy, CRC only)",
                    rate(lambda: encode_segments(model, meta)), "GB/s",
                    "pickle5 out-of-band dumps", rate(pickle_oob)))

    # decode ------------------------------------------------------------
    packed = encode(model, meta)
    inband = pickle.dumps(model, protocol=5)
    oob_data, oob_bufs = pickle_oob()
    rows.append(Row(g, "decode verify=True (CRC pass)", rate(lambda: decode(packed)), "GB/s",
                    "pickle5 in-band loads", rate(lambda: pickle.loads(inband))))
    t_pack = median_time(lambda: decode(packed, verify=False), repeat * 3)
    t_oob = median_time(lambda: pickle.loads(oob_data, buffers=oob_bufs), repeat * 3)
    rows.append(Row(g, "decode verify=False (zero-copy views)", gbps(payload, t_pack), "GB/s",
                    "pickle5 out-of-band loads", gbps(payload, t_oob)))
    rows.append(Row(g, f"decode verify=False, time for {N_TENSORS} tensors", t_pack * 1e6, "us",
                    "pickle5 out-of-band loads", t_oob * 1e6, "<= 1.5x"))
    # Size independence: the same 100 tensors at 1/4096 of the bytes decode in the same time.
    small = encode(_model(total >> 12), meta)
    t_small = median_time(lambda: decode(small, verify=False), repeat * 3)
    rows.append(Row(g, f"decode verify=False, {payload >> 20} MiB vs {payload >> 22} KiB",
                    t_pack * 1e6, "us", f"same {N_TENSORS} tensors, 1/4096 the bytes",
                    t_small * 1e6, "<= 1.5x"))
    return rows


if __name__ == "__main__":
    t0 = time.perf_counter()
    for r in run(quick=True):
        print(f"{r.name:60s} {r.value:10.2f} {r.unit:5s} vs {r.baseline_name} "
              f"{r.baseline_value:.2f} ratio {r.ratio:.2f} {r.target}")
    print(f"{time.perf_counter() - t0:.1f} s")
