"""Pythonic layer over cellnet's C core (loaded through cffi, API mode)."""

from __future__ import annotations

from cellnet.native import dtypes
from cellnet.native._cpu import cpu_features, forced_portable
from cellnet.native._crc import copy_crc32c, crc32c, crc32c_impl
from cellnet.native._loader import EXPECTED_ABI, ffi, lib
from cellnet.native.aggregate import (
    MAX_ROBUST_INPUTS,
    WeightedAccumulator,
    accumulate,
    accumulate_many,
    clip_norm,
    finalize,
    l2_norm,
    median,
    trimmed_mean,
)
from cellnet.native.pack import (
    PackLimits,
    TensorPack,
    decode,
    encode,
    encode_segments,
    packed_size,
)
from cellnet.native.quantize import (
    DEFAULT_BLOCK,
    convert,
    dequantize_int8,
    quantize_int8,
    to_bfloat16,
    to_float16,
    to_float32,
)

__all__ = [
    "DEFAULT_BLOCK",
    "EXPECTED_ABI",
    "MAX_ROBUST_INPUTS",
    "PackLimits",
    "TensorPack",
    "WeightedAccumulator",
    "accumulate",
    "accumulate_many",
    "clip_norm",
    "convert",
    "copy_crc32c",
    "cpu_features",
    "crc32c",
    "crc32c_impl",
    "decode",
    "dequantize_int8",
    "dtypes",
    "encode",
    "encode_segments",
    "ffi",
    "finalize",
    "forced_portable",
    "l2_norm",
    "lib",
    "median",
    "packed_size",
    "quantize_int8",
    "to_bfloat16",
    "to_float16",
    "to_float32",
    "trimmed_mean",
]
