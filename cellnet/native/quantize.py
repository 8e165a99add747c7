"""Float format conversion and blockwise int8 quantization for compression filters.

Conversions round once to nearest even (also float64 -> float16/bfloat16,
which never goes through a double rounding), overflow to +-inf, keep NaN as
NaN and produce exact subnormals: results equal numpy's ``astype`` (and
``ml_dtypes`` for bfloat16) bit for bit, NaN payloads aside.

Int8 quantization is symmetric per block of ``block`` consecutive elements
(of the flattened array): ``scale_b = max|x_b| / 127`` and
``q = round(x / scale_b)``, so each element comes back within
``scale_b / 2`` (plus float32 rounding) of its original value; an all-zero
block has scale 0 and comes back as zeros.
"""

from __future__ import annotations

import numpy as np

from cellnet.errors import DTypeError, InvalidArgumentError, ShapeError
from cellnet.native._loader import ffi, lib
from cellnet.native._status import check
from cellnet.native.dtypes import from_cn, to_cn

#: Default number of elements per int8 quantization block.
DEFAULT_BLOCK = 256

_FLOATS = frozenset([lib.CN_F16, lib.CN_BF16, lib.CN_F32, lib.CN_F64])


def _float_array(x, what: str = "x") -> tuple[np.ndarray, int]:
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{what} must be a numpy array, got {type(x).__name__}")
    code = to_cn(x.dtype)
    if code not in _FLOATS:
        raise DTypeError(f"{what} must have a float dtype, got {x.dtype}")
    return np.ascontiguousarray(x), code


def _ptr(a: np.ndarray):
    return ffi.cast("void *", a.ctypes.data)


def convert(x: np.ndarray, dtype) -> np.ndarray:
    """A new array of ``x``'s values in float ``dtype`` (f16/bf16/f32/f64)."""
    src, sc = _float_array(x)
    dc = to_cn(dtype)
    if dc not in _FLOATS:
        raise DTypeError(f"target dtype must be a float dtype, got {np.dtype(dtype)}")
    return _convert(src, sc, dc, "convert")


def _convert(src: np.ndarray, sc: int, dc: int, what: str) -> np.ndarray:
    out = np.empty(src.shape, from_cn(dc))
    check(lib.cn_convert(_ptr(src), sc, _ptr(out), dc, src.size), what)
    return out


def to_float16(x: np.ndarray) -> np.ndarray:
    """``x`` as float16 (round to nearest even, overflow to inf)."""
    return convert(x, np.float16)


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """``x`` as bfloat16 (``ml_dtypes.bfloat16``, or raw uint16 bits without it)."""
    return _convert(*_float_array(x), lib.CN_BF16, "to_bfloat16")


def to_float32(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 (exact from float16/bfloat16, rounded from float64)."""
    return convert(x, np.float32)


def _block(block) -> int:
    if isinstance(block, bool) or not isinstance(block, int | np.integer):
        raise InvalidArgumentError(f"block must be an int, got {block!r}")
    if not 0 < block < 2**32:
        raise InvalidArgumentError(f"block must be in 1..2**32-1, got {block}")
    return int(block)


def quantize_int8(x: np.ndarray, block: int = DEFAULT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Blockwise symmetric int8: ``(q, scales)`` for the flattened ``x``.

    ``q`` is int8 with ``x.size`` elements in [-127, 127]; ``scales`` is
    float32 with one entry per block (``ceil(x.size / block)``).  Every value
    dequantizes to within ``scales[b] / 2`` (+ float32 rounding) of itself.
    Non-finite values (and float64 beyond float32 range) raise
    InvalidArgumentError.
    """
    src, sc = _float_array(x)
    b = _block(block)
    q = np.empty(src.size, np.int8)
    scales = np.empty(int(lib.cn_q8_nblocks(src.size, b)), np.float32)
    st = lib.cn_quantize_q8(_ptr(src), sc, src.size, b, ffi.cast("int8_t *", q.ctypes.data),
                            ffi.cast("float *", scales.ctypes.data))
    check(st, "quantize_int8")
    return q, scales


def dequantize_int8(q: np.ndarray, scales: np.ndarray, shape, block: int = DEFAULT_BLOCK,
                    dtype=np.float32) -> np.ndarray:
    """Inverse of :func:`quantize_int8`: ``q * scale_b`` reshaped to ``shape``.

    Computed in float32 (float64 for a float64 ``dtype``) and rounded once to
    ``dtype``.
    """
    b = _block(block)
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        raise DTypeError(f"q must be an int8 array, got {getattr(q, 'dtype', type(q))}")
    if not isinstance(scales, np.ndarray) or scales.dtype != np.float32:
        raise DTypeError(f"scales must be a float32 array, got "
                         f"{getattr(scales, 'dtype', type(scales))}")
    shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(map(int, shape))
    if any(d < 0 for d in shape):
        raise ShapeError(f"negative dimension in shape {shape}")
    n = int(np.prod(shape, dtype=np.int64))
    if q.size != n:
        raise ShapeError(f"q has {q.size} elements, shape {shape} needs {n}")
    if scales.size != int(lib.cn_q8_nblocks(n, b)):
        raise ShapeError(f"{scales.size} scales for {n} values in blocks of {b}")
    oc = to_cn(dtype)
    if oc not in _FLOATS:
        raise DTypeError(f"dtype must be a float dtype, got {np.dtype(dtype)}")
    qc = np.ascontiguousarray(q).reshape(-1)
    sc = np.ascontiguousarray(scales).reshape(-1)
    out = np.empty(shape, from_cn(oc))
    st = lib.cn_dequantize_q8(ffi.cast("int8_t *", qc.ctypes.data),
                              ffi.cast("float *", sc.ctypes.data), n, b, _ptr(out), oc)
    check(st, "dequantize_int8")
    return out


__all__ = [
    "DEFAULT_BLOCK",
    "convert",
    "dequantize_int8",
    "quantize_int8",
    "to_bfloat16",
    "to_float16",
    "to_float32",
]
