"""The global model spilled to the workspace, so a round can release it while results arrive."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

Model = dict[str, np.ndarray]


class SpilledModel:
    """``model`` written as one ``.npy`` per variable under ``folder`` (reloaded on demand)."""

    def __init__(self, model: Mapping[str, np.ndarray], folder: Path) -> None:
        self.folder = Path(folder)
        self.layout = [(name, a.shape, a.dtype) for name, a in model.items()]
        self.folder.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(model.values()):
            np.save(self.folder / f"{i}.npy", np.ascontiguousarray(a), allow_pickle=False)

    @property
    def names(self) -> set[str]:
        return {name for name, _, _ in self.layout}

    def skeleton(self) -> Model:
        """Arrays of the model's shapes and dtypes that hold no memory (read-only)."""
        return {name: np.broadcast_to(np.zeros((), dt), shape) for name, shape, dt in self.layout}

    def load(self) -> Model:
        """The model, read back."""
        return {name: np.load(self.folder / f"{i}.npy", allow_pickle=False)
                for i, (name, _, _) in enumerate(self.layout)}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
