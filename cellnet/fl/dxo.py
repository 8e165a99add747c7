"""DXO: the data-exchange object that filters transform and aggregators consume.

A DXO is a kind (:class:`DataKind`: full weights, a weight difference, or
metrics), a flat ``name -> ndarray`` dict and a JSON/CBOR-able ``meta`` dict
(round numbers, the number of training steps, the filter history...).  It
travels as one tensor pack: the arrays as tensors, ``{DATA_KIND: kind,
**meta}`` as the pack's CBOR metadata.

Wire contract.  :meth:`DXO.to_payload` gives that pack as a *tensor
payload* (a :class:`DXOPayload`: the DXO's own arrays plus the pack
metadata), which a cell message encodes straight from the arrays' buffers
(the pack encoder's segments, never one concatenated copy) and sends as one
frame, or -- above ``LinkConfig.stream_threshold`` -- as a stream of chunks.
The receiver gets a zero-copy :class:`~cellnet.native.pack.TensorPack` and
:meth:`DXO.from_payload` turns it into a DXO whose arrays are read-only
views of the receive buffer.  :meth:`DXO.to_bytes` / :meth:`DXO.from_bytes`
are the same pack as one buffer (files, tests; ``from_payload`` accepts it too).

DXOs are treated as values: filters return a new DXO (new dicts, arrays
shared where untouched) and never modify the one they were given.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import numpy as np

from cellnet.defs import MetaKey
from cellnet.errors import CorruptDataError, DTypeError, InvalidArgumentError
from cellnet.native import pack
from cellnet.native.dtypes import BFLOAT16


class DataKind(StrEnum):
    """What a DXO's arrays mean (the reference's ``DataKind`` string values)."""

    WEIGHTS = "WEIGHTS"
    WEIGHT_DIFF = "WEIGHT_DIFF"
    METRICS = "METRICS"


def _plain(obj: Any) -> Any:
    """``obj`` with StrEnum keys/values turned into plain ``str`` (for CBOR/JSON)."""
    if isinstance(obj, StrEnum):
        return str(obj.value)
    if isinstance(obj, Mapping):
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def is_float(a: np.ndarray) -> bool:
    """True for float16/bfloat16/float32/float64 arrays (what filters transform)."""
    dt = a.dtype
    if BFLOAT16 is not None and dt == BFLOAT16:
        return True
    return dt in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def dtype_from_name(name: str) -> np.dtype:
    """The numpy dtype named ``name`` (``"bfloat16"`` through ml_dtypes)."""
    if name == "bfloat16":
        if BFLOAT16 is None:
            raise DTypeError("bfloat16 data needs the ml_dtypes package (extra 'bf16')")
        return BFLOAT16
    try:
        return np.dtype(name)
    except TypeError:
        raise DTypeError(f"unknown dtype name {name!r}") from None


@dataclasses.dataclass(frozen=True)
class DXO:
    """A kind, named arrays and meta; validated on construction."""

    kind: DataKind
    data: dict[str, np.ndarray]
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            kind = DataKind(self.kind)
        except ValueError:
            raise InvalidArgumentError(
                f"DXO kind must be one of {[k.value for k in DataKind]}, got {self.kind!r}"
            ) from None
        if not isinstance(self.data, Mapping):
            raise DTypeError(f"DXO data must be a mapping name -> array, got "
                             f"{type(self.data).__name__}")
        for name, value in self.data.items():
            if not isinstance(name, str):
                raise DTypeError(f"DXO data names must be str, got {name!r}")
            if not isinstance(value, np.ndarray):
                raise DTypeError(f"DXO data[{name!r}] must be a numpy array, got "
                                 f"{type(value).__name__}")
        if not isinstance(self.meta, Mapping):
            raise DTypeError(f"DXO meta must be a mapping, got {type(self.meta).__name__}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "data", dict(self.data))
        object.__setattr__(self, "meta", dict(self.meta))

    @classmethod
    def metrics(cls, values: Mapping[str, Any], meta: Mapping | None = None) -> DXO:
        """A METRICS DXO from ``name -> number`` (each stored as a 0-d float64 array)."""
        data = {}
        for k, v in values.items():
            try:
                data[k] = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidArgumentError(f"metric {k!r} is not a number: {v!r}") from None
        return cls(DataKind.METRICS, data, dict(meta or {}))

    def replace(self, *, data: Mapping | None = None, meta: Mapping | None = None) -> DXO:
        """A new DXO of the same kind with ``data`` and/or ``meta`` swapped in."""
        return DXO(self.kind, dict(self.data if data is None else data),
                   dict(self.meta if meta is None else meta))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """``meta[key]`` or ``default``."""
        return self.meta.get(key, default)

    @property
    def history(self) -> list[dict]:
        """The filter history entries, oldest first (a copy)."""
        return copy.deepcopy(list(self.meta.get(MetaKey.FILTER_HISTORY, [])))

    def with_history(self, entry: Mapping, *, data: Mapping | None = None,
                     meta: Mapping | None = None) -> DXO:
        """A new DXO with ``entry`` appended to ``meta[FILTER_HISTORY]`` (and data/meta)."""
        new_meta = dict(self.meta if meta is None else meta)
        new_meta[MetaKey.FILTER_HISTORY] = [*self.history, _plain(dict(entry))]
        return self.replace(data=data, meta=new_meta)

    @property
    def nbytes(self) -> int:
        """Total bytes of the arrays."""
        return sum(a.nbytes for a in self.data.values())

    def to_bytes(self) -> memoryview:
        """One tensor pack: the arrays, with ``{DATA_KIND: kind, **meta}`` as its metadata."""
        meta = _plain(self.meta)
        meta[str(MetaKey.DATA_KIND)] = str(self.kind.value)
        try:
            return pack.encode(self.data, meta)
        except TypeError as exc:
            raise InvalidArgumentError(f"DXO cannot be packed: {exc}") from exc

    def to_payload(self) -> DXOPayload:
        """The DXO as a tensor payload for a cell message (no copy of the arrays)."""
        meta = _plain(self.meta)
        meta[str(MetaKey.DATA_KIND)] = str(self.kind.value)
        return DXOPayload(self.data, meta)

    @classmethod
    def from_payload(cls, payload: Any) -> DXO:
        """The DXO a message payload carries: a decoded tensor pack or the pack's bytes."""
        if isinstance(payload, pack.TensorPack):
            return cls._from_pack(payload)
        if payload is None or isinstance(payload, Mapping):
            raise CorruptDataError(f"the payload is not a DXO tensor pack "
                                   f"({type(payload).__name__})")
        return cls.from_bytes(payload)

    @classmethod
    def from_bytes(cls, buf, *, limits: pack.PackLimits | None = None) -> DXO:
        """Decode :meth:`to_bytes` output (arrays are read-only views into ``buf``)."""
        return cls._from_pack(pack.decode(buf, limits=limits))

    @classmethod
    def _from_pack(cls, tp: pack.TensorPack) -> DXO:
        meta = dict(tp.meta) if isinstance(tp.meta, Mapping) else {}
        kind = meta.pop(str(MetaKey.DATA_KIND), None)
        if kind is None:
            raise CorruptDataError("pack carries no data kind: not a DXO")
        try:
            return cls(DataKind(kind), {name: tp[name] for name in tp}, meta)
        except ValueError:
            raise CorruptDataError(f"pack carries an unknown data kind {kind!r}") from None


class DXOPayload(dict):
    """A DXO's arrays as a cell tensor payload; ``meta`` is the pack metadata (kind + meta)."""

    def __init__(self, data: Mapping[str, np.ndarray], meta: dict):
        super().__init__(data)
        self.meta = meta


__all__ = ["DXO", "DXOPayload", "DataKind", "dtype_from_name", "is_float"]
