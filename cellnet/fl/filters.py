"""DXO filters: quantization (both ways), Gaussian privacy, variable exclusion, chains.

A filter is a pure function of a DXO: :meth:`Filter.process` returns a new DXO
and leaves its input unchanged.  Every filter appends one entry
``{"name", "args", ...}`` to ``meta[MetaKey.FILTER_HISTORY]`` saying what it
did, and is built from a JSON-able spec ``{"name": ..., "args": {...}}`` by
:func:`make_filter` (a list of specs gives a :class:`FilterChain`), so the
filters of a job live in its app config.

Error bounds of :class:`Quantize` (per element, ``x`` finite, ``x'`` restored):

* ``fp16``: ``|x' - x| <= 2**-11 * |x|`` for ``2**-14 <= |x| <= 65504``, and
  ``<= 2**-25`` below (subnormals); ``|x| > 65504`` raises FilterError.
* ``bf16``: ``|x' - x| <= 2**-8 * |x|`` for ``|x| >= 2**-126`` (float32's
  normal range), and ``<= 2**-134`` below.
* ``int8``: per block ``b`` of ``block`` consecutive elements,
  ``|x' - x| <= max|x_b| / 254`` (plus float32 rounding).

:class:`GaussianPrivacy` is the Gaussian mechanism on a clipped update: the
L2 sensitivity of the clipped update is ``clip_norm`` and the noise std is
``sigma = noise_multiplier * clip_norm``.  No privacy accounting (epsilon,
delta over rounds) is done here.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from cellnet.defs import MetaKey
from cellnet.errors import CellnetError, DTypeError, FilterConfigError, FilterError
from cellnet.fl.dxo import DXO, DataKind, dtype_from_name, is_float
from cellnet.native import aggregate as agg
from cellnet.native import quantize as qz

#: Suffix of the data entry holding the int8 block scales of variable ``name``.
SCALES_SUFFIX = "::q8scales"

_METHODS = ("fp16", "bf16", "int8")


class Filter(abc.ABC):
    """Base of every filter: ``process(dxo) -> DXO`` plus its JSON-able spec."""

    #: Registry name (also the ``name`` of history entries and specs).
    name: ClassVar[str] = ""

    def args(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able (``make_filter(f.spec())`` rebuilds it)."""
        return {}

    def spec(self) -> dict[str, Any]:
        """``{"name": ..., "args": {...}}`` for this filter."""
        return {"name": self.name, "args": self.args()}

    def process(self, dxo: DXO) -> DXO:
        """Return the filtered DXO (the input is not modified)."""
        if not isinstance(dxo, DXO):
            raise FilterError(f"{self.name} filters a DXO, got {type(dxo).__name__}")
        return self._process(dxo)

    __call__ = process

    @abc.abstractmethod
    def _process(self, dxo: DXO) -> DXO:
        """The filter's transformation (``dxo`` is known to be a DXO)."""

    def _entry(self, **extra: Any) -> dict[str, Any]:
        return {"name": self.name, "args": self.args(), **extra}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args().items())
        return f"{type(self).__name__}({inner})"


def _positive(value: Any, what: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool):
        raise FilterConfigError(f"{what} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FilterConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise FilterConfigError(f"{what} must be finite and {bound}, got {value!r}")
    return v


class Quantize(Filter):
    """Replace each float array by a compact form: fp16, bf16 or blockwise int8.

    fp16/bf16 leave arrays already 2 bytes wide alone; int8 stores the flat
    int8 codes under the variable's name and the float32 block scales under
    ``name + SCALES_SUFFIX``.  ``meta[PROCESSED_ALGORITHM]`` gets the method
    and ``meta[PROCESSED_KEYS]`` maps each processed name to its original
    dtype and shape, which is all :class:`Dequantize` needs.  Non-float arrays
    pass through untouched.
    """

    name = "Quantize"

    def __init__(self, method: str = "fp16", block: int = qz.DEFAULT_BLOCK):
        if method not in _METHODS:
            raise FilterConfigError(f"Quantize method must be one of {_METHODS}, got {method!r}")
        if isinstance(block, bool) or not isinstance(block, int) or not 0 < block < 2**31:
            raise FilterConfigError(f"Quantize block must be an int in 1..2**31-1, got {block!r}")
        self.method = method
        self.block = block

    def args(self) -> dict[str, Any]:
        return {"method": self.method, "block": self.block}

    def _process(self, dxo: DXO) -> DXO:
        if MetaKey.PROCESSED_ALGORITHM in dxo.meta:
            raise FilterError(f"DXO is already processed by "
                              f"{dxo.meta[MetaKey.PROCESSED_ALGORITHM]!r}; dequantize it first")
        data: dict[str, np.ndarray] = {}
        keys: dict[str, dict[str, Any]] = {}
        for name, a in dxo.data.items():
            if name.endswith(SCALES_SUFFIX):
                raise FilterError(f"variable name {name!r} ends in the reserved {SCALES_SUFFIX!r}")
            if not is_float(a) or (self.method != "int8" and a.dtype.itemsize <= 2):
                data[name] = a
                continue
            info: dict[str, Any] = {"dtype": str(a.dtype), "shape": list(a.shape)}
            if self.method == "int8":
                q, scales = self._int8(name, a)
                data[name], data[name + SCALES_SUFFIX] = q, scales
                info["block"] = self.block
            else:
                data[name] = self._half(name, a)
            keys[name] = info
        meta = dict(dxo.meta)
        meta[MetaKey.PROCESSED_ALGORITHM] = self.method
        meta[MetaKey.PROCESSED_KEYS] = keys
        return dxo.with_history(self._entry(keys=sorted(keys)), data=data, meta=meta)

    def _half(self, name: str, a: np.ndarray) -> np.ndarray:
        out = qz.to_float16(a) if self.method == "fp16" else qz.to_bfloat16(a)
        if self.method == "fp16":
            bad = np.isinf(out)
            if bad.any() and np.isfinite(a[bad]).any():
                raise FilterError(f"{name!r} holds values beyond float16's range (65504); "
                                  f"use method='bf16' or 'int8'")
        return out

    def _int8(self, name: str, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            return qz.quantize_int8(a, self.block)
        except CellnetError as exc:
            raise FilterError(f"cannot quantize {name!r} to int8: {exc}") from exc


class Dequantize(Filter):
    """Undo :class:`Quantize`: restore every processed array to its original dtype and shape.

    A DXO that was not quantized passes through (its history entry lists no keys).
    """

    name = "Dequantize"

    def _process(self, dxo: DXO) -> DXO:
        method = dxo.meta.get(MetaKey.PROCESSED_ALGORITHM)
        if method is None:
            return dxo.with_history(self._entry(keys=[]))
        if method not in _METHODS:
            raise FilterError(f"unknown {MetaKey.PROCESSED_ALGORITHM} {method!r}")
        keys = dxo.meta.get(MetaKey.PROCESSED_KEYS)
        if not isinstance(keys, Mapping):
            raise FilterError(f"meta[{MetaKey.PROCESSED_KEYS}] must map names to dtype/shape")
        data = dict(dxo.data)
        for name, info in keys.items():
            data[name] = self._restore(dxo, method, name, info)
            data.pop(name + SCALES_SUFFIX, None)
        meta = dict(dxo.meta)
        del meta[MetaKey.PROCESSED_ALGORITHM]
        meta.pop(MetaKey.PROCESSED_KEYS, None)
        return dxo.with_history(self._entry(method=method, keys=sorted(keys)),
                                data=data, meta=meta)

    @staticmethod
    def _restore(dxo: DXO, method: str, name: str, info: Any) -> np.ndarray:
        try:
            dtype = dtype_from_name(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            a = dxo.data[name]
            if method == "int8":
                return qz.dequantize_int8(a, dxo.data[name + SCALES_SUFFIX], shape,
                                          int(info["block"]), dtype=dtype)
            if a.shape != shape:
                raise FilterError(f"{name!r} has shape {a.shape}, meta says {shape}")
            return qz.convert(a, dtype)
        except FilterError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise FilterError(f"cannot dequantize {name!r} ({method}): {exc!r}") from exc


class GaussianPrivacy(Filter):
    """Clip a WEIGHT_DIFF update to L2 norm ``clip_norm`` and add N(0, sigma^2) noise.

    ``per_array=False`` (default) clips the global norm over all arrays;
    ``per_array=True`` clips each array to ``clip_norm`` on its own (then the
    whole update's sensitivity is ``sqrt(n_arrays) * clip_norm``).  Noise has
    ``sigma = noise_multiplier * clip_norm`` per element, drawn in float32
    (float64 for float64 arrays) from ``numpy.random.default_rng(seed)``:
    a fixed seed gives the same noise on every call, so use one only for tests
    or reproducible experiments.  Every variable must be a float array (drop
    others with :class:`ExcludeVars` first); results keep each array's dtype.
    The history entry records sigma and the mode, never the update's norm.
    """

    name = "GaussianPrivacy"

    def __init__(self, clip_norm: float, noise_multiplier: float, seed: int | None = None,
                 per_array: bool = False):
        self.clip_norm = _positive(clip_norm, "clip_norm")
        self.noise_multiplier = _positive(noise_multiplier, "noise_multiplier", allow_zero=True)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise FilterConfigError(f"seed must be a non-negative int or None, got {seed!r}")
        if not isinstance(per_array, bool):
            raise FilterConfigError(f"per_array must be a bool, got {per_array!r}")
        self.seed = seed
        self.per_array = per_array

    @property
    def sigma(self) -> float:
        """Standard deviation of the added noise."""
        return self.noise_multiplier * self.clip_norm

    def args(self) -> dict[str, Any]:
        return {"clip_norm": self.clip_norm, "noise_multiplier": self.noise_multiplier,
                "seed": self.seed, "per_array": self.per_array}

    def _process(self, dxo: DXO) -> DXO:
        if dxo.kind != DataKind.WEIGHT_DIFF:
            raise FilterError(f"GaussianPrivacy applies to WEIGHT_DIFF updates, got {dxo.kind}")
        if MetaKey.PROCESSED_ALGORITHM in dxo.meta:
            raise FilterError("GaussianPrivacy must run before Quantize")
        names = sorted(dxo.data)
        for name in names:
            if not is_float(dxo.data[name]):
                raise DTypeError(f"GaussianPrivacy needs float arrays; {name!r} is "
                                 f"{dxo.data[name].dtype} (exclude it with ExcludeVars)")
        norms = {name: agg.l2_norm(dxo.data[name]) for name in names}
        if not all(math.isfinite(n) for n in norms.values()):
            raise FilterError("update holds NaN or inf values")
        if self.per_array:
            scales = {name: min(1.0, self.clip_norm / n) if n else 1.0
                      for name, n in norms.items()}
        else:
            total = math.sqrt(math.fsum(n * n for n in norms.values()))
            s = min(1.0, self.clip_norm / total) if total else 1.0
            scales = dict.fromkeys(names, s)
        rng = np.random.default_rng(self.seed)
        data = dict(dxo.data)
        for name in names:
            data[name] = self._noised(dxo.data[name], scales[name], rng)
        entry = self._entry(sigma=self.sigma, mode="per_array" if self.per_array else "global",
                            keys=names)
        return dxo.with_history(entry, data=data)

    def _noised(self, a: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        work = np.float64 if a.dtype == np.float64 else np.float32
        out = rng.standard_normal(a.shape, dtype=work)
        out *= work(self.sigma)
        out += a.astype(work, copy=False) * work(scale)
        return out if out.dtype == a.dtype else out.astype(a.dtype)


class ExcludeVars(Filter):
    """Drop variables by exact name or by regex (``re.search``); record which were dropped.

    On a quantized DXO the scales and PROCESSED_KEYS entry of a dropped
    variable go with it.
    """

    name = "ExcludeVars"

    def __init__(self, names: Iterable[str] = (), patterns: Iterable[str] = ()):
        if isinstance(names, str) or isinstance(patterns, str):
            raise FilterConfigError("names and patterns must be lists of strings, not a string")
        try:
            self.names = sorted(set(names))
            self.patterns = list(patterns)
        except TypeError:
            raise FilterConfigError("names and patterns must be lists of strings") from None
        if not all(isinstance(x, str) for x in [*self.names, *self.patterns]):
            raise FilterConfigError("names and patterns must be lists of strings")
        try:
            self._regexes = [re.compile(p) for p in self.patterns]
        except re.error as exc:
            raise FilterConfigError(f"bad pattern {exc.pattern!r}: {exc}") from None
        if not self.names and not self.patterns:
            raise FilterConfigError("ExcludeVars needs at least one name or pattern")

    def args(self) -> dict[str, Any]:
        return {"names": list(self.names), "patterns": list(self.patterns)}

    def _matches(self, name: str) -> bool:
        return name in self.names or any(r.search(name) for r in self._regexes)

    def _process(self, dxo: DXO) -> DXO:
        dropped = sorted(n for n in dxo.data
                         if not n.endswith(SCALES_SUFFIX) and self._matches(n))
        data = dict(dxo.data)
        meta = dict(dxo.meta)
        keys = meta.get(MetaKey.PROCESSED_KEYS)
        if isinstance(keys, Mapping):
            keys = dict(keys)
        for name in dropped:
            del data[name]
            data.pop(name + SCALES_SUFFIX, None)
            if isinstance(keys, dict):
                keys.pop(name, None)
        if isinstance(keys, dict):
            meta[MetaKey.PROCESSED_KEYS] = keys
        return dxo.with_history(self._entry(excluded=dropped), data=data, meta=meta)


class FilterChain(Filter):
    """Apply filters in order (each adds its own history entry)."""

    name = "FilterChain"

    def __init__(self, filters: Sequence[Filter] = ()):
        filters = list(filters)
        for f in filters:
            if not isinstance(f, Filter):
                raise FilterConfigError(f"FilterChain takes filters, got {type(f).__name__}")
        self.filters = filters

    def args(self) -> dict[str, Any]:
        return {"filters": [f.spec() for f in self.filters]}

    def _process(self, dxo: DXO) -> DXO:
        for f in self.filters:
            dxo = f.process(dxo)
        return dxo

    def __len__(self) -> int:
        return len(self.filters)


_REGISTRY: dict[str, Callable[..., Filter]] = {}


def register_filter(name: str, factory: Callable[..., Filter]) -> None:
    """Make ``factory(**args)`` available to :func:`make_filter` under ``name``."""
    if not isinstance(name, str) or not name:
        raise FilterConfigError(f"filter name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise FilterConfigError(f"filter factory for {name!r} is not callable")
    _REGISTRY[name] = factory


def filter_names() -> list[str]:
    """Names :func:`make_filter` knows."""
    return sorted(_REGISTRY)


def _chain_factory(filters: Sequence = ()) -> FilterChain:
    return make_filter(list(filters))


def make_filter(spec: Mapping | Sequence | Filter) -> Filter:
    """Build a filter from ``{"name": ..., "args": {...}}`` (a list builds a FilterChain).

    Unknown names, unexpected keys or arguments, and arguments a filter
    rejects raise FilterConfigError naming the offending spec.
    """
    if isinstance(spec, Filter):
        return spec
    if isinstance(spec, list | tuple):
        return FilterChain([make_filter(s) for s in spec])
    if not isinstance(spec, Mapping):
        raise FilterConfigError(f"filter spec must be a dict or list, got {type(spec).__name__}")
    extra = set(spec) - {"name", "args"}
    if extra:
        raise FilterConfigError(f"filter spec has unknown keys {sorted(map(str, extra))}")
    name, args = spec.get("name"), spec.get("args", {})
    if name not in _REGISTRY:
        raise FilterConfigError(f"unknown filter {name!r}; known: {filter_names()}")
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise FilterConfigError(f"{name}: args must be a dict of keyword arguments")
    try:
        return _REGISTRY[name](**args)
    except FilterConfigError as exc:
        raise FilterConfigError(f"{name}: {exc}") from None
    except TypeError as exc:
        raise FilterConfigError(f"{name}: bad arguments {sorted(args)}: {exc}") from None


for _cls in (Quantize, Dequantize, GaussianPrivacy, ExcludeVars):
    register_filter(_cls.name, _cls)
register_filter(FilterChain.name, _chain_factory)

__all__ = [
    "SCALES_SUFFIX",
    "Dequantize",
    "ExcludeVars",
    "Filter",
    "FilterChain",
    "GaussianPrivacy",
    "Quantize",
    "filter_names",
    "make_filter",
    "register_filter",
]
