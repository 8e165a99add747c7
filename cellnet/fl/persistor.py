"""NPModelPersistor: where a workflow's numpy model starts and where its rounds are kept.

The initial model comes from exactly one of: an ``.npz`` file (``model_file``,
relative to the app folder), an initializer function (``initializer``:
``"module.func"``, called with ``initializer_args``, returning ``name ->
array``) or literal nested lists (``arrays``).  Models are written as
``.npz`` files into ``<job workspace>/<save_dir>/``: ``round-<r>.npz`` after
each round (only the last ``keep_rounds`` are kept when it is set),
``final.npz`` at the end and ``best.npz`` whenever the validation metric
improves.  Each file is written beside its destination and renamed over it,
so a reader never sees a half-written model.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellnet.errors import JobError

__all__ = ["NPModelPersistor", "load_npz"]

Model = dict[str, np.ndarray]


def load_npz(path: str | os.PathLike[str]) -> Model:
    """The arrays of an ``.npz`` file, read fully (JobError when it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read the model file {path}: {exc}") from exc


def _check_model(model: Any, where: str) -> Model:
    if not isinstance(model, Mapping) or not model:
        raise JobError(f"{where}: a model is a non-empty mapping name -> array, "
                       f"got {type(model).__name__}")
    out = {}
    for name, a in model.items():
        if not isinstance(name, str) or not name:
            raise JobError(f"{where}: model names must be non-empty str, got {name!r}")
        arr = np.asarray(a)
        if arr.dtype.kind != "f":
            raise JobError(f"{where}: {name!r} is {arr.dtype}, a model holds float arrays")
        out[name] = arr
    return out


class NPModelPersistor:
    """Initial model and per-round/final/best ``.npz`` files (see the module docstring)."""

    def __init__(self, model_file: str | None = None, initializer: str | None = None,
                 initializer_args: Mapping[str, Any] | None = None,
                 arrays: Mapping[str, Any] | None = None, dtype: str = "float32",
                 save_dir: str = "models", keep_rounds: int | None = None,
                 save_rounds: bool = True) -> None:
        given = [n for n, v in (("model_file", model_file), ("initializer", initializer),
                                ("arrays", arrays)) if v is not None]
        if len(given) != 1:
            raise JobError("the persistor needs exactly one of model_file, initializer, arrays"
                           f" (got {given or 'none'})")
        if initializer is not None and (not isinstance(initializer, str)
                                        or "." not in initializer):
            raise JobError(f"initializer must be 'module.function', got {initializer!r}")
        if initializer_args is not None and not isinstance(initializer_args, Mapping):
            raise JobError("initializer_args must be an object")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise JobError(f"persistor dtype: unknown dtype {dtype!r}") from None
        if self.dtype.kind != "f":
            raise JobError(f"persistor dtype must be a float dtype, got {self.dtype}")
        if not isinstance(save_dir, str) or not save_dir or Path(save_dir).is_absolute() \
                or ".." in Path(save_dir).parts:
            raise JobError(f"save_dir must be a relative folder name, got {save_dir!r}")
        if keep_rounds is not None and (isinstance(keep_rounds, bool)
                                        or not isinstance(keep_rounds, int) or keep_rounds < 1):
            raise JobError(f"keep_rounds must be a positive int or null, got {keep_rounds!r}")
        self.model_file, self.initializer = model_file, initializer
        self.initializer_args = dict(initializer_args or {})
        self.arrays = None if arrays is None else dict(arrays)
        self.save_dir, self.keep_rounds, self.save_rounds = save_dir, keep_rounds, save_rounds
        self.saved: dict[str, str] = {}  # "final" / "best" / "round-N" -> path

    # --- loading --------------------------------------------------------------------
    def load_initial(self, app_dir: str | os.PathLike[str]) -> Model:
        """The initial model (arrays cast to ``dtype``)."""
        app_dir = Path(app_dir)
        if self.model_file is not None:
            path = Path(self.model_file)
            model = load_npz(path if path.is_absolute() else app_dir / path)
        elif self.initializer is not None:
            model = self._call_initializer(app_dir)
        else:
            try:
                model = {n: np.asarray(v, dtype=self.dtype) for n, v in self.arrays.items()}
            except (TypeError, ValueError) as exc:
                raise JobError(f"persistor arrays: not numeric: {exc}") from exc
        model = _check_model(model, "initial model")
        return {n: np.ascontiguousarray(a, dtype=self.dtype) for n, a in model.items()}

    def _call_initializer(self, app_dir: Path) -> Any:
        custom = app_dir / "custom"
        if custom.is_dir() and str(custom) not in sys.path:
            sys.path.insert(0, str(custom))
        module_name, _, fn_name = self.initializer.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise JobError(f"initializer {self.initializer!r} cannot be loaded: {exc}") from exc
        return fn(**self.initializer_args)

    # --- saving ---------------------------------------------------------------------
    def model_dir(self, workspace: str | os.PathLike[str]) -> Path:
        """``<workspace>/<save_dir>`` (created)."""
        d = Path(workspace) / self.save_dir
        d.mkdir(parents=True, exist_ok=True)
        return d

    def save(self, model: Mapping[str, np.ndarray], name: str,
             workspace: str | os.PathLike[str]) -> Path:
        """Write ``model`` as ``<name>.npz`` (atomically); its path."""
        if not name or "/" in name or name.startswith("."):
            raise JobError(f"bad model name {name!r}")
        model = _check_model(model, f"model {name!r}")
        path = self.model_dir(workspace) / f"{name}.npz"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **model)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.saved[name] = str(path)
        return path

    def save_round(self, model: Mapping[str, np.ndarray], round_num: int,
                   workspace: str | os.PathLike[str]) -> Path | None:
        """Save round ``round_num`` (unless ``save_rounds`` is off) and drop old ones."""
        if not self.save_rounds:
            return None
        path = self.save(model, f"round-{round_num}", workspace)
        if self.keep_rounds is not None:
            old = round_num - self.keep_rounds
            stale = self.saved.pop(f"round-{old}", None) if old >= 0 else None
            if stale is not None:
                Path(stale).unlink(missing_ok=True)
        return path
