"""numpy dtype <-> cn_dtype mapping, with and without ml_dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from cellnet.errors import DTypeError
from cellnet.native import dtypes, lib

PAIRS = [
    (np.bool_, "CN_BOOL"), (np.int8, "CN_I8"), (np.int16, "CN_I16"), (np.int32, "CN_I32"),
    (np.int64, "CN_I64"), (np.uint8, "CN_U8"), (np.uint16, "CN_U16"), (np.uint32, "CN_U32"),
    (np.uint64, "CN_U64"), (np.float16, "CN_F16"), (np.float32, "CN_F32"),
    (np.float64, "CN_F64"),
]


@pytest.mark.parametrize(("np_type", "const"), PAIRS)
def test_round_trip(np_type, const):
    code = getattr(lib, const)
    assert dtypes.to_cn(np_type) == code
    assert dtypes.to_cn(np.dtype(np_type)) == code
    assert dtypes.from_cn(code) == np.dtype(np_type)
    assert dtypes.itemsize(code) == np.dtype(np_type).itemsize


def test_bfloat16_with_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert dtypes.BFLOAT16 == np.dtype(ml_dtypes.bfloat16)
    assert dtypes.to_cn(ml_dtypes.bfloat16) == lib.CN_BF16
    assert dtypes.from_cn(lib.CN_BF16) == np.dtype(ml_dtypes.bfloat16)
    assert dtypes.itemsize(lib.CN_BF16) == 2


def test_bfloat16_without_ml_dtypes(monkeypatch):
    monkeypatch.setattr(dtypes, "BFLOAT16", None)
    assert dtypes.from_cn(lib.CN_BF16) == np.dtype(np.uint16)
    assert dtypes.to_cn(np.uint16) == lib.CN_U16
    assert dtypes.to_cn(np.uint16, bf16=True) == lib.CN_BF16


def test_bf16_label_rejects_other_dtypes():
    with pytest.raises(DTypeError):
        dtypes.to_cn(np.float32, bf16=True)


@pytest.mark.parametrize("bad", ["O", "c8", "c16", "U3", "S2", "V4", ">f4", ">i8",
                                 [("a", "f4")], "datetime64[s]"])
def test_unsupported_dtypes(bad):
    with pytest.raises(DTypeError):
        dtypes.to_cn(bad)


def test_not_a_dtype():
    with pytest.raises(DTypeError):
        dtypes.to_cn("no-such-dtype")
    assert issubclass(DTypeError, TypeError)


@pytest.mark.parametrize("code", [0, 14, -1, 255, 1 << 40, None, "f4"])
def test_unknown_codes(code):
    with pytest.raises(DTypeError):
        dtypes.from_cn(code)
    with pytest.raises(DTypeError):
        dtypes.itemsize(code)


def test_codes_cover_every_native_dtype():
    assert {dtypes.to_cn(dtypes.from_cn(c)) for c in dtypes.CODES if c != lib.CN_BF16} == (
        dtypes.CODES - {lib.CN_BF16}
    )
    assert all(lib.cn_dtype_size(c) for c in dtypes.CODES)
