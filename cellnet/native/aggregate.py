"""Weighted (FedAvg) and robust aggregation of numpy arrays on the native kernels.

Every function validates shapes, dtypes and parameters *before* it calls the
core, so bad input raises a typed error (:class:`~cellnet.errors.ShapeError`,
:class:`~cellnet.errors.DTypeError`, :class:`~cellnet.errors.InvalidArgumentError`)
and changes nothing.  Inputs may be float16, bfloat16 (``ml_dtypes``), float32
or float64; accumulators are float32 or float64.  Non-contiguous inputs are
copied to contiguous ones first; arrays the functions write into must be
C-contiguous and writeable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from cellnet.errors import DTypeError, InvalidArgumentError, ShapeError
from cellnet.native._loader import ffi, lib
from cellnet.native._status import check
from cellnet.native.dtypes import from_cn, to_cn

#: Most inputs :func:`median` and :func:`trimmed_mean` take at once.
MAX_ROBUST_INPUTS: int = lib.CN_AGG_MAX_INPUTS

_FLOATS = frozenset([lib.CN_F16, lib.CN_BF16, lib.CN_F32, lib.CN_F64])
_ACCS = frozenset([lib.CN_F32, lib.CN_F64])


def _code(a: np.ndarray, what: str, allowed=_FLOATS) -> int:
    code = to_cn(a.dtype)
    if code not in allowed:
        kinds = "float32 or float64" if allowed is _ACCS else "a float dtype"
        raise DTypeError(f"{what} must be {kinds}, got {a.dtype}")
    return code


def _array(x, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{what} must be a numpy array, got {type(x).__name__}")
    return np.ascontiguousarray(x)


def _target(a, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise DTypeError(f"{what} must be a numpy array, got {type(a).__name__}")
    if not (a.flags.c_contiguous and a.flags.writeable):
        raise InvalidArgumentError(f"{what} must be a C-contiguous, writeable array")
    return a


def _ptr(a: np.ndarray):
    return ffi.cast("void *", a.ctypes.data)


def _weight(w, what: str = "weight") -> float:
    try:
        v = float(w)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be a real number, got {w!r}") from None
    if not math.isfinite(v):
        raise InvalidArgumentError(f"{what} must be finite, got {v}")
    return v


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{what}: shape {b.shape} does not match {a.shape}")


def accumulate(acc: np.ndarray, x: np.ndarray, weight: float) -> np.ndarray:
    """``acc += weight * x`` in one pass, in acc's precision; returns ``acc``."""
    acc = _target(acc, "acc")
    ac = _code(acc, "acc", _ACCS)
    x = _array(x, "x")
    xc = _code(x, "x")
    _same_shape(acc, x, "x")
    w = _weight(weight)
    check(lib.cn_agg_accumulate(_ptr(acc), ac, _ptr(x), xc, acc.size, w), "accumulate")
    return acc


def accumulate_many(acc: np.ndarray, xs: Sequence[np.ndarray], weights: Sequence[float]):
    """``acc += sum_k weights[k] * xs[k]`` reading each input once; returns ``acc``.

    Inputs of one dtype are fused into a single pass over the accumulator
    (inputs of different dtypes take one pass per dtype).
    """
    acc = _target(acc, "acc")
    ac = _code(acc, "acc", _ACCS)
    xs = [_array(x, f"xs[{i}]") for i, x in enumerate(xs)]
    ws = [_weight(w, f"weights[{i}]") for i, w in enumerate(weights)]
    if len(xs) != len(ws):
        raise ShapeError(f"{len(xs)} inputs but {len(ws)} weights")
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(xs):
        _same_shape(acc, x, f"xs[{i}]")
        groups.setdefault(_code(x, f"xs[{i}]"), []).append(i)
    for xc, idx in groups.items():
        ptrs = ffi.new("void *[]", [_ptr(xs[i]) for i in idx])
        wv = ffi.new("double[]", [ws[i] for i in idx])
        st = lib.cn_agg_accumulate_many(_ptr(acc), ac, ptrs, xc, wv, len(idx), acc.size)
        check(st, "accumulate_many")
    return acc


def finalize(acc: np.ndarray, total_weight: float, out: np.ndarray | None = None,
             dtype=None) -> np.ndarray:
    """``acc / total_weight`` rounded to ``dtype`` (default: out's, else acc's).

    ``out`` may be ``acc`` itself.  ``total_weight`` must be finite and > 0.
    """
    if not isinstance(acc, np.ndarray):
        raise DTypeError(f"acc must be a numpy array, got {type(acc).__name__}")
    acc_c = np.ascontiguousarray(acc)
    ac = _code(acc_c, "acc", _ACCS)
    tw = _weight(total_weight, "total_weight")
    if tw <= 0:
        raise InvalidArgumentError(f"total_weight must be > 0, got {tw}")
    if out is None:
        oc = _code(np.empty(0, dtype if dtype is not None else acc.dtype), "dtype")
        out = np.empty(acc.shape, from_cn(oc))
    else:
        out = _target(out, "out")
        oc = _code(out, "out")
        if dtype is not None and np.dtype(dtype) != out.dtype:
            raise DTypeError(f"dtype {np.dtype(dtype)} disagrees with out.dtype {out.dtype}")
        _same_shape(acc, out, "out")
        if np.shares_memory(out, acc_c) and not (
            out.ctypes.data == acc_c.ctypes.data and out.itemsize <= acc_c.itemsize
        ):
            raise InvalidArgumentError("out overlaps acc other than in place")
    st = lib.cn_agg_finalize(_ptr(acc_c), ac, acc_c.size, tw, _ptr(out), oc)
    check(st, "finalize")
    return out


def _robust_inputs(xs, out, dtype) -> tuple[list[np.ndarray], int, np.ndarray, int]:
    xs = [_array(x, f"xs[{i}]") for i, x in enumerate(xs)]
    if not xs:
        raise InvalidArgumentError("need at least one input")
    if len(xs) > MAX_ROBUST_INPUTS:
        raise InvalidArgumentError(f"at most {MAX_ROBUST_INPUTS} inputs, got {len(xs)}")
    xc = _code(xs[0], "xs[0]")
    for i, x in enumerate(xs):
        _same_shape(xs[0], x, f"xs[{i}]")
        if x.dtype != xs[0].dtype:
            raise DTypeError(f"xs[{i}] has dtype {x.dtype}, xs[0] has {xs[0].dtype}")
    if out is None:
        if dtype is None:
            dtype = np.float64 if xc == lib.CN_F64 else np.float32
        oc = _code(np.empty(0, dtype), "dtype")
        out = np.empty(xs[0].shape, from_cn(oc))
    else:
        out = _target(out, "out")
        oc = _code(out, "out")
        _same_shape(xs[0], out, "out")
    return xs, xc, out, oc


def median(xs: Sequence[np.ndarray], out: np.ndarray | None = None, dtype=None) -> np.ndarray:
    """Coordinate-wise median of equal-shape inputs (``np.median(axis=0)``).

    Computed in double, rounded to ``dtype`` (default float64 for float64
    inputs, else float32).  An even count averages the two middle values; a
    coordinate holding any NaN gives NaN, as ``np.median`` does.
    """
    xs, xc, out, oc = _robust_inputs(xs, out, dtype)
    ptrs = ffi.new("void *[]", [_ptr(x) for x in xs])
    check(lib.cn_agg_median(ptrs, xc, len(xs), xs[0].size, _ptr(out), oc), "median")
    return out


def trimmed_mean(xs: Sequence[np.ndarray], trim: int, out: np.ndarray | None = None,
                 dtype=None) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``trim`` lowest and highest values.

    Equals ``np.sort(np.stack(xs), axis=0)[trim:k - trim].mean(axis=0)``
    (within rounding); needs ``2 * trim < k``.  NaN as for :func:`median`.
    """
    if isinstance(trim, bool) or not isinstance(trim, int | np.integer) or trim < 0:
        raise InvalidArgumentError(f"trim must be a non-negative int, got {trim!r}")
    xs, xc, out, oc = _robust_inputs(xs, out, dtype)
    if 2 * trim >= len(xs):
        raise InvalidArgumentError(f"trim={trim} drops all of {len(xs)} inputs")
    ptrs = ffi.new("void *[]", [_ptr(x) for x in xs])
    st = lib.cn_agg_trimmed_mean(ptrs, xc, len(xs), int(trim), xs[0].size, _ptr(out), oc)
    check(st, "trimmed_mean")
    return out


def l2_norm(x: np.ndarray) -> float:
    """Euclidean norm of all elements, accumulated in double (NaN in, NaN out)."""
    x = _array(x, "x")
    xc = _code(x, "x")
    res = ffi.new("double *")
    check(lib.cn_l2_norm(_ptr(x), xc, x.size, res), "l2_norm")
    return float(res[0])


def clip_norm(x: np.ndarray, max_norm: float) -> float:
    """Scale ``x`` in place so its L2 norm is at most ``max_norm``; return the scale.

    The scale is ``min(1, max_norm / ||x||)``.  A non-finite norm (NaN/inf
    in ``x``) raises InvalidArgumentError and leaves ``x`` unchanged.
    """
    x = _target(x, "x")
    xc = _code(x, "x")
    m = _weight(max_norm, "max_norm")
    if m < 0:
        raise InvalidArgumentError(f"max_norm must be >= 0, got {m}")
    res = ffi.new("double *")
    check(lib.cn_clip_norm(_ptr(x), xc, x.size, m, res), "clip_norm")
    return float(res[0])


class WeightedAccumulator:
    """Running weighted sum of dicts of arrays (FedAvg): one model's worth of memory.

    The first :meth:`add` fixes the tensor names, shapes and (default) result
    dtypes; later updates must match them exactly.  Every update is checked
    completely before any accumulator changes, so a rejected update leaves
    the running sum, :attr:`total_weight` and :attr:`count` untouched.
    """

    def __init__(self, dtype=np.float32):
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise DTypeError(f"accumulator dtype must be float32 or float64, got {dt}")
        self._dtype = dt
        self._acc: dict[str, np.ndarray] = {}
        #: accumulators of the previous round, reused (zeroed) when the model matches
        self._spare: dict[str, np.ndarray] = {}
        self._out_dtypes: dict[str, np.dtype] = {}
        self._total = 0.0
        self._count = 0

    @property
    def dtype(self) -> np.dtype:
        """The accumulator dtype."""
        return self._dtype

    @property
    def total_weight(self) -> float:
        """Sum of the weights added so far."""
        return self._total

    @property
    def count(self) -> int:
        """Number of updates added so far."""
        return self._count

    def _check(self, tensors: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
        if not isinstance(tensors, Mapping):
            raise DTypeError(f"{what} must be a mapping of name -> array")
        arrays = {}
        for name, t in tensors.items():
            a = _array(t, f"{what}[{name!r}]")
            _code(a, f"{what}[{name!r}]")
            arrays[name] = a
        if self._acc:
            missing = self._acc.keys() - arrays.keys()
            extra = arrays.keys() - self._acc.keys()
            if missing or extra:
                raise ShapeError(f"{what}: tensor names differ (missing {sorted(missing)}, "
                                 f"unexpected {sorted(extra)})")
            for name, a in arrays.items():
                _same_shape(self._acc[name], a, f"{what}[{name!r}]")
        return arrays

    @staticmethod
    def _check_weight(w, what: str) -> float:
        v = _weight(w, what)
        if v < 0:
            raise InvalidArgumentError(f"{what} must be >= 0, got {v}")
        return v

    def _first(self, arrays: dict[str, np.ndarray]) -> None:
        if not self._acc:
            spare, self._spare = self._spare, {}
            for name, a in arrays.items():
                buf = spare.get(name)
                if buf is not None and buf.shape == a.shape:
                    buf.fill(0)  # touched pages: much cheaper than faulting in fresh ones
                else:
                    buf = np.zeros(a.shape, self._dtype)
                self._acc[name] = buf
                self._out_dtypes[name] = a.dtype

    def add(self, tensors: Mapping[str, np.ndarray], weight: float) -> None:
        """Fold one update in: ``acc[name] += weight * tensors[name]``."""
        w = self._check_weight(weight, "weight")
        arrays = self._check(tensors, "update")
        self._first(arrays)
        for name, a in arrays.items():
            accumulate(self._acc[name], a, w)
        self._total += w
        self._count += 1

    def add_many(self, updates: Sequence[Mapping[str, np.ndarray]],
                 weights: Sequence[float]) -> None:
        """Fold several updates in, one fused pass per tensor over all of them."""
        updates, weights = list(updates), list(weights)
        if len(updates) != len(weights):
            raise ShapeError(f"{len(updates)} updates but {len(weights)} weights")
        ws = [self._check_weight(w, f"weights[{i}]") for i, w in enumerate(weights)]
        checked: list[dict[str, np.ndarray]] = []
        for i, u in enumerate(updates):
            arrays = self._check(u, f"updates[{i}]")
            if checked and arrays.keys() != checked[0].keys():
                raise ShapeError(f"updates[{i}]: tensor names differ from updates[0]")
            for name, a in arrays.items():
                if checked:
                    _same_shape(checked[0][name], a, f"updates[{i}][{name!r}]")
            checked.append(arrays)
        if not checked:
            return
        self._first(checked[0])
        for name, acc in self._acc.items():
            accumulate_many(acc, [u[name] for u in checked], ws)
        self._total += math.fsum(ws)
        self._count += len(checked)

    def result(self, dtype=None) -> dict[str, np.ndarray]:
        """The weighted mean ``acc / total_weight`` per tensor, as fresh arrays.

        ``dtype`` defaults to each tensor's dtype in the first update.
        """
        if not self._count:
            raise InvalidArgumentError("no update has been added")
        if self._total <= 0:
            raise InvalidArgumentError("total weight is 0: the weighted mean is undefined")
        return {name: finalize(acc, self._total,
                               dtype=dtype if dtype is not None else self._out_dtypes[name])
                for name, acc in self._acc.items()}

    def reset(self, *, keep_buffers: bool = False) -> None:
        """Forget every update (names and shapes too).

        ``keep_buffers=True`` keeps the accumulator memory for the next round
        (zeroed when its first update arrives, reallocated if the model changed).
        """
        self._spare = self._acc if keep_buffers else {}
        self._acc = {}
        self._out_dtypes.clear()
        self._total = 0.0
        self._count = 0


__all__ = [
    "MAX_ROBUST_INPUTS",
    "WeightedAccumulator",
    "accumulate",
    "accumulate_many",
    "clip_norm",
    "finalize",
    "l2_norm",
    "median",
    "trimmed_mean",
]
