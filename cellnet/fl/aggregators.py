"""Server-side aggregators of client DXOs: in-time FedAvg and robust statistics.

Theory of operation: a round starts with :meth:`Aggregator.reset`; every
arriving result goes through :meth:`Aggregator.accept`, which checks it
completely (kind, names, shapes, dtypes, weight, contributor not seen yet in
this round) *before* it touches any state, so a rejected contribution raises
an :class:`~cellnet.errors.AggregationError` and leaves the aggregator exactly
as it was.  :meth:`Aggregator.aggregate` returns the round's DXO.

:class:`InTimeFedAvg` folds each result into a native weighted accumulator as
it arrives: the server holds about one model (the running sum) whatever the
number of clients.  :class:`CoordinateMedian` and :class:`TrimmedMean` need
all K updates at once, so they keep every accepted update (K models of
memory) and cap K at ``max_count`` (at most the native limit
:data:`~cellnet.native.aggregate.MAX_ROBUST_INPUTS`); they ignore weights.
A result whose ``meta[CURRENT_ROUND]`` differs from the aggregator's round
(when both are set) is a late arrival: ``accept`` returns False and ignores it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from cellnet.defs import MetaKey
from cellnet.errors import (
    AggregationError,
    DuplicateContributionError,
    InvalidArgumentError,
    NativeError,
)
from cellnet.fl.dxo import DXO, DataKind, is_float
from cellnet.native import aggregate as agg

_UPDATE_KINDS = (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF)


class Aggregator(abc.ABC):
    """Common round bookkeeping: contributors, kind, round number."""

    def __init__(self) -> None:
        self._round: int | None = None
        self._contributors: list[str] = []
        self._kind: DataKind | None = None

    @property
    def round(self) -> int | None:
        """The round being aggregated (None: results are not checked for their round)."""
        return self._round

    @property
    def contributors(self) -> list[str]:
        """Who contributed to this round, in arrival order."""
        return list(self._contributors)

    @property
    def count(self) -> int:
        """Number of accepted contributions this round."""
        return len(self._contributors)

    def reset(self, round: int | None = None) -> None:
        """Forget every contribution and start ``round``."""
        if round is not None and (isinstance(round, bool) or not isinstance(round, int)):
            raise InvalidArgumentError(f"round must be an int or None, got {round!r}")
        self._round = round
        self._contributors.clear()
        self._kind = None
        self._clear()

    def accept(self, dxo: DXO, contributor: str) -> bool:
        """Fold in ``contributor``'s result; False if it belongs to another round."""
        if not isinstance(contributor, str) or not contributor:
            raise AggregationError(f"contributor must be a non-empty str, got {contributor!r}")
        if not isinstance(dxo, DXO):
            raise AggregationError(f"{contributor}: expected a DXO, got {type(dxo).__name__}")
        rnd = dxo.meta.get(MetaKey.CURRENT_ROUND)
        if self._round is not None and rnd is not None and rnd != self._round:
            return False
        if contributor in self._contributors:
            raise DuplicateContributionError(
                f"{contributor} already contributed to round {self._round}")
        if dxo.kind not in _UPDATE_KINDS:
            raise AggregationError(f"{contributor}: cannot aggregate a {dxo.kind} DXO")
        if self._kind is not None and dxo.kind != self._kind:
            raise AggregationError(f"{contributor}: sent {dxo.kind}, this round holds "
                                   f"{self._kind}")
        if not dxo.data:
            raise AggregationError(f"{contributor}: the DXO holds no arrays")
        for name, a in dxo.data.items():
            if not is_float(a):
                raise AggregationError(f"{contributor}: {name!r} is {a.dtype}, not a float "
                                       f"array (drop it with ExcludeVars)")
        if MetaKey.PROCESSED_ALGORITHM in dxo.meta:
            raise AggregationError(f"{contributor}: the DXO is still quantized "
                                   f"({dxo.meta[MetaKey.PROCESSED_ALGORITHM]}); dequantize it")
        self._add(dxo, contributor)
        self._kind = dxo.kind
        self._contributors.append(contributor)
        return True

    def aggregate(self) -> DXO:
        """The round's result (same kind as the inputs); meta records round and contributors."""
        if not self._contributors:
            raise AggregationError("no contribution has been accepted this round")
        data = self._result()
        meta: dict[str, Any] = {"contributors": list(self._contributors),
                                "aggregator": type(self).__name__}
        if self._round is not None:
            meta[MetaKey.CURRENT_ROUND] = self._round
        assert self._kind is not None
        return DXO(self._kind, data, meta)

    @abc.abstractmethod
    def _add(self, dxo: DXO, contributor: str) -> None:
        """Fold in a DXO that passed the common checks, or raise and change nothing."""

    @abc.abstractmethod
    def _result(self) -> dict[str, np.ndarray]:
        """The aggregated arrays."""

    @abc.abstractmethod
    def _clear(self) -> None:
        """Drop the accumulated state."""


def update_norm(dxo: DXO, contributor: str) -> float:
    """The global L2 norm of ``dxo``'s arrays; AggregationError when it holds NaN or inf."""
    try:
        sq = math.fsum(agg.l2_norm(a) ** 2 for a in dxo.data.values())
    except NativeError as exc:
        raise AggregationError(f"{contributor}: {exc}") from exc
    norm = math.sqrt(sq)
    if not math.isfinite(norm):
        raise AggregationError(f"{contributor}: the update holds NaN or inf values")
    return norm


def _acc_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InvalidArgumentError(f"not a dtype: {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidArgumentError(f"accumulator dtype must be float32 or float64, got {dt}")
    return dt


class InTimeFedAvg(Aggregator):
    """FedAvg that accumulates each result on arrival (server memory ~ one model).

    The weight of a result is ``meta[weights_key]`` (by default the number of
    training steps); a result without it weighs ``default_weight`` (None makes
    the key mandatory).  ``dtype`` is the accumulator precision; results come
    back in each variable's dtype of the first accepted result.

    ``clip_norm``: scale every WEIGHT_DIFF update to global L2 norm at most
    ``clip_norm`` before it is folded in, so no single client can move the
    average by more than ``clip_norm * w_i / sum(w)``.  It is applied through
    the weight (no copy of the update); WEIGHTS results are rejected when it is set.
    """

    def __init__(self, weights_key: str = MetaKey.NUM_STEPS_CURRENT_ROUND,
                 dtype: Any = np.float32, clip_norm: float | None = None,
                 default_weight: float | None = 1.0):
        super().__init__()
        if not isinstance(weights_key, str) or not weights_key:
            raise InvalidArgumentError(f"weights_key must be a non-empty str, got "
                                       f"{weights_key!r}")
        self.weights_key = weights_key
        self._acc = agg.WeightedAccumulator(_acc_dtype(dtype))
        self.clip_norm = None if clip_norm is None else self._num(clip_norm, "clip_norm", 0.0)
        if self.clip_norm == 0:
            raise InvalidArgumentError("clip_norm must be > 0")
        self.default_weight = (None if default_weight is None
                               else self._num(default_weight, "default_weight", 0.0))
        self._weight_sum = 0.0
        self._clipped = 0
        self._dtypes: dict[str, np.dtype] = {}

    @staticmethod
    def _num(value: Any, what: str, low: float) -> float:
        if isinstance(value, bool):
            raise InvalidArgumentError(f"{what} must be a number, got {value!r}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{what} must be a number, got {value!r}") from None
        if not math.isfinite(v) or v < low:
            raise InvalidArgumentError(f"{what} must be finite and >= {low}, got {value!r}")
        return v

    @property
    def dtype(self) -> np.dtype:
        """Accumulator dtype."""
        return self._acc.dtype

    @property
    def total_weight(self) -> float:
        """Sum of the accepted results' weights."""
        return self._weight_sum

    @property
    def clipped(self) -> int:
        """How many accepted updates were scaled down by ``clip_norm`` this round."""
        return self._clipped

    def _weight(self, dxo: DXO, contributor: str) -> float:
        raw = dxo.meta.get(self.weights_key)
        if raw is None:
            if self.default_weight is None:
                raise AggregationError(f"{contributor}: meta lacks {self.weights_key!r}")
            return self.default_weight
        try:
            return self._num(raw, f"{contributor}: meta[{self.weights_key!r}]", 0.0)
        except InvalidArgumentError as exc:
            raise AggregationError(str(exc)) from None

    def _scale(self, dxo: DXO, contributor: str) -> float:
        if self.clip_norm is None:
            return 1.0
        if dxo.kind != DataKind.WEIGHT_DIFF:
            raise AggregationError(f"{contributor}: clip_norm applies to WEIGHT_DIFF updates, "
                                   f"got {dxo.kind}")
        norm = update_norm(dxo, contributor)
        return min(1.0, self.clip_norm / norm) if norm else 1.0

    def _add(self, dxo: DXO, contributor: str) -> None:
        w = self._weight(dxo, contributor)
        s = self._scale(dxo, contributor)
        try:
            self._acc.add(dxo.data, w * s)
        except NativeError as exc:
            raise AggregationError(f"{contributor}: {exc}") from exc
        if not self._dtypes:
            self._dtypes = {name: a.dtype for name, a in dxo.data.items()}
        self._weight_sum += w
        self._clipped += s < 1.0

    def _result(self) -> dict[str, np.ndarray]:
        if self._weight_sum <= 0:
            raise AggregationError("the accepted results weigh 0 in total: no weighted mean")
        ratio = self._acc.total_weight / self._weight_sum
        if ratio == 1.0:
            return self._acc.result()
        # Clipped updates were added with weight w*s: rescale sum(w*s*x)/sum(w*s) to /sum(w).
        out = {}
        for name, mean in self._acc.result(dtype=self._acc.dtype).items():
            mean *= ratio
            out[name] = mean.astype(self._dtypes[name], copy=False)
        return out

    def _clear(self) -> None:
        self._acc.reset(keep_buffers=True)
        self._weight_sum = 0.0
        self._clipped = 0
        self._dtypes = {}


class _Keeper(Aggregator):
    """Keeps every accepted update (robust statistics need all K at once)."""

    def __init__(self, max_count: int = agg.MAX_ROBUST_INPUTS):
        super().__init__()
        if (isinstance(max_count, bool) or not isinstance(max_count, int)
                or not 0 < max_count <= agg.MAX_ROBUST_INPUTS):
            raise InvalidArgumentError(f"max_count must be an int in 1..{agg.MAX_ROBUST_INPUTS},"
                                       f" got {max_count!r}")
        self.max_count = max_count
        self._updates: list[dict[str, np.ndarray]] = []

    def _add(self, dxo: DXO, contributor: str) -> None:
        if len(self._updates) >= self.max_count:
            raise AggregationError(f"{contributor}: {type(self).__name__} holds at most "
                                     f"{self.max_count} updates per round")
        if self._updates:
            ref = self._updates[0]
            if ref.keys() != dxo.data.keys():
                raise AggregationError(
                    f"{contributor}: variable names differ (missing "
                    f"{sorted(ref.keys() - dxo.data.keys())}, unexpected "
                    f"{sorted(dxo.data.keys() - ref.keys())})")
            for name, a in dxo.data.items():
                if a.shape != ref[name].shape or a.dtype != ref[name].dtype:
                    raise AggregationError(
                        f"{contributor}: {name!r} is {a.dtype}{list(a.shape)}, expected "
                        f"{ref[name].dtype}{list(ref[name].shape)}")
        self._updates.append({n: np.ascontiguousarray(a) for n, a in dxo.data.items()})

    def _clear(self) -> None:
        self._updates.clear()

    def _result(self) -> dict[str, np.ndarray]:
        out = {}
        for name, first in self._updates[0].items():
            xs = [u[name] for u in self._updates]
            dtype = np.float64 if first.dtype == np.float64 else np.float32
            out[name] = self._stat(xs, dtype).astype(first.dtype, copy=False)
        return out

    @abc.abstractmethod
    def _stat(self, xs: list[np.ndarray], dtype: Any) -> np.ndarray:
        """The coordinate-wise statistic of equal-shape arrays."""


class CoordinateMedian(_Keeper):
    """Coordinate-wise median of the accepted updates (unweighted; keeps all K)."""

    def _stat(self, xs: list[np.ndarray], dtype: Any) -> np.ndarray:
        return agg.median(xs, dtype=dtype)


class TrimmedMean(_Keeper):
    """Coordinate-wise mean without the ``trim`` lowest and highest values (keeps all K).

    Needs more than ``2 * trim`` updates at :meth:`aggregate` time.
    """

    def __init__(self, trim: int = 1, max_count: int = agg.MAX_ROBUST_INPUTS):
        super().__init__(max_count)
        if isinstance(trim, bool) or not isinstance(trim, int) or trim < 0:
            raise InvalidArgumentError(f"trim must be a non-negative int, got {trim!r}")
        self.trim = trim

    def aggregate(self) -> DXO:
        if self._updates and 2 * self.trim >= len(self._updates):
            raise AggregationError(f"trim={self.trim} needs more than {2 * self.trim} updates, "
                                   f"got {len(self._updates)}")
        return super().aggregate()

    def _stat(self, xs: list[np.ndarray], dtype: Any) -> np.ndarray:
        return agg.trimmed_mean(xs, self.trim, dtype=dtype)


_AGGREGATORS = {c.__name__: c for c in (InTimeFedAvg, CoordinateMedian, TrimmedMean)}


def make_aggregator(spec: Mapping) -> Aggregator:
    """Build an aggregator from ``{"name": ..., "args": {...}}`` (e.g. from a job config)."""
    if not isinstance(spec, Mapping) or set(spec) - {"name", "args"}:
        raise InvalidArgumentError(f"aggregator spec must be {{'name', 'args'}}, got {spec!r}")
    name, args = spec.get("name"), spec.get("args", {})
    if name not in _AGGREGATORS:
        raise InvalidArgumentError(f"unknown aggregator {name!r}; known: {sorted(_AGGREGATORS)}")
    if not isinstance(args, Mapping):
        raise InvalidArgumentError(f"{name}: args must be a dict")
    try:
        return _AGGREGATORS[name](**args)
    except TypeError as exc:
        raise InvalidArgumentError(f"{name}: bad arguments {sorted(args)}: {exc}") from None


__all__ = [
    "Aggregator",
    "CoordinateMedian",
    "InTimeFedAvg",
    "TrimmedMean",
    "make_aggregator",
    "update_norm",
]
