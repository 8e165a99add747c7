"""Argument checks and the persistor/workspace plumbing the workflows share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellnet.errors import JobError
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.persistor import NPModelPersistor
from cellnet.fl.runtime.controller import TaskResult

Model = dict[str, np.ndarray]


def check_int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise JobError(f"{what} must be an int >= {low}, got {value!r}")
    return value


def check_seconds(value: Any, what: str, allow_zero: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) \
        and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise JobError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} "
                       f"number of seconds, got {value!r}")
    return float(value)


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise JobError(f"{what} must be a non-empty str, got {value!r}")
    return value


def need_persistor(spec: Any, workflow: str) -> Any:
    if spec is None:
        raise JobError(f"{workflow} needs a persistor (where the initial model is)")
    return spec


def make_persistor(spec: Any, app_dir: Path) -> Any:
    """A persistor object from itself, ``{"path", "args"}`` or NPModelPersistor's args."""
    if spec is None:
        return None
    if callable(getattr(spec, "load_initial", None)) and callable(getattr(spec, "save", None)):
        return spec
    if not isinstance(spec, Mapping):
        raise JobError(f"persistor: expected an object spec, got {spec!r}")
    if "path" in spec:
        from cellnet.fl.runtime.components import load_component

        return load_component(dict(spec), Path(app_dir), "persistor")
    try:
        return NPModelPersistor(**spec)
    except TypeError as exc:
        raise JobError(f"persistor: bad arguments {sorted(spec)}: {exc}") from None


def workspace(engine: Any) -> Path:
    """The server job workspace: the folder holding the job's app folder."""
    return Path(engine.app_dir).resolve().parent


def failure_text(results: Mapping[str, TaskResult]) -> str:
    """``site: rc (first line of the error)`` for every result that is not OK."""
    parts = []
    for name, r in results.items():
        if not r.ok:
            first = (r.error or "").strip().splitlines()
            parts.append(f"{name}: {r.rc}" + (f" ({first[-1]})" if first else ""))
    return "; ".join(parts) or "none failed"


def apply_update(model: Model, update: DXO) -> Model:
    """The new global model: ``update`` itself (WEIGHTS) or ``model + update`` (WEIGHT_DIFF)."""
    unknown = sorted(set(update.data) - set(model))
    if unknown:
        raise JobError(f"the aggregated update holds variables the model lacks: {unknown}")
    out = dict(model)
    for name, a in update.data.items():
        ref = model[name]
        if a.shape != ref.shape:
            raise JobError(f"aggregated {name!r} has shape {a.shape}, the model {ref.shape}")
        if update.kind == DataKind.WEIGHT_DIFF:
            out[name] = ref + a.astype(ref.dtype, copy=False)
        elif a.dtype == ref.dtype and a.flags.owndata and a.flags.writeable:
            out[name] = a  # a fresh aggregate (e.g. finalized in place): no copy
        else:
            out[name] = np.array(a, dtype=ref.dtype)  # own the memory (not a receive buffer)
    return out


def mean_metrics(entries: list[tuple[float, Mapping[str, Any]]]) -> dict[str, float]:
    """Weighted mean of each numeric metric over ``(weight, metrics)`` pairs."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for w, metrics in entries:
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                continue
            sums[k] = sums.get(k, 0.0) + w * float(v)
            weights[k] = weights.get(k, 0.0) + w
    return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
