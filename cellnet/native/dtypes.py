"""Map numpy dtypes to the native core's ``cn_dtype`` codes and back.

bfloat16 is numpy-native only through ``ml_dtypes``; when that package is not
importable, bfloat16 data is carried as raw ``uint16`` bit patterns and must be
labelled explicitly (``to_cn(dtype, bf16=True)``) since ``uint16`` alone means
``CN_U16``.
"""

from __future__ import annotations

import numpy as np

from cellnet.errors import DTypeError
from cellnet.native._loader import lib

try:  # optional dependency (extra "bf16")
    import ml_dtypes as _ml_dtypes
except ImportError:  # pragma: no cover - exercised by monkeypatching BFLOAT16
    _ml_dtypes = None

#: The ``ml_dtypes.bfloat16`` numpy dtype, or ``None`` when ml_dtypes is missing.
BFLOAT16: np.dtype | None = np.dtype(_ml_dtypes.bfloat16) if _ml_dtypes is not None else None

#: Dtype that carries bfloat16 values as raw bit patterns when ml_dtypes is missing.
BF16_RAW = np.dtype(np.uint16)

# Little-endian (native order on every supported platform) numpy dtypes by code.
_BY_CODE: dict[int, np.dtype] = {
    lib.CN_BOOL: np.dtype(np.bool_),
    lib.CN_I8: np.dtype(np.int8),
    lib.CN_I16: np.dtype(np.int16),
    lib.CN_I32: np.dtype(np.int32),
    lib.CN_I64: np.dtype(np.int64),
    lib.CN_U8: np.dtype(np.uint8),
    lib.CN_U16: np.dtype(np.uint16),
    lib.CN_U32: np.dtype(np.uint32),
    lib.CN_U64: np.dtype(np.uint64),
    lib.CN_F16: np.dtype(np.float16),
    lib.CN_F32: np.dtype(np.float32),
    lib.CN_F64: np.dtype(np.float64),
}
_BY_DTYPE: dict[np.dtype, int] = {dt: code for code, dt in _BY_CODE.items()}

#: Every code this module knows, including bfloat16.
CODES: frozenset[int] = frozenset([*_BY_CODE, lib.CN_BF16])


def _bf16() -> np.dtype | None:
    # Read through the module global so tests can monkeypatch BFLOAT16 to None.
    return globals()["BFLOAT16"]


def to_cn(dtype, *, bf16: bool = False) -> int:
    """The ``cn_dtype`` code of a numpy dtype; raise DTypeError if unsupported.

    ``bf16=True`` labels a ``uint16`` array as raw bfloat16 bit patterns (the
    fallback representation when ml_dtypes is not installed).
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"not a numpy dtype: {dtype!r}") from exc
    if not dt.isnative:
        raise DTypeError(f"non-native byte order dtype {dt} is not supported; convert it first")
    if bf16:
        if dt == BF16_RAW or (_bf16() is not None and dt == _bf16()):
            return lib.CN_BF16
        raise DTypeError(f"bf16=True needs uint16 bit patterns or bfloat16, got {dt}")
    bf = _bf16()
    if bf is not None and dt == bf:
        return lib.CN_BF16
    code = _BY_DTYPE.get(dt)
    if code is None:
        raise DTypeError(f"dtype {dt} is not supported (bool, int8..64, uint8..64, "
                         f"float16, bfloat16, float32, float64 are)")
    return code


def from_cn(code: int) -> np.dtype:
    """The numpy dtype for a ``cn_dtype`` code (bfloat16: ml_dtypes or raw uint16)."""
    if code == lib.CN_BF16:
        bf = _bf16()
        return bf if bf is not None else BF16_RAW
    try:
        return _BY_CODE[code]
    except (KeyError, TypeError):
        raise DTypeError(f"unknown cn_dtype code {code!r}") from None


def itemsize(code: int) -> int:
    """Bytes per element of a ``cn_dtype`` code; raise DTypeError if unknown."""
    size = lib.cn_dtype_size(code) if isinstance(code, int) and 0 <= code < 256 else 0
    if not size:
        raise DTypeError(f"unknown cn_dtype code {code!r}")
    return int(size)


__all__ = ["BF16_RAW", "BFLOAT16", "CODES", "from_cn", "itemsize", "to_cn"]
