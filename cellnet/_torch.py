"""Torch CPU tensors as numpy views (no copy), so tensor payloads may hold them; torch optional.

Nothing here imports torch: a value is recognised by its type's module, and
converted with ``detach().numpy()``, which shares the tensor's memory.  A GPU
tensor or a dtype numpy lacks (bfloat16) is refused with a clear error
instead of being copied behind the caller's back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cellnet.errors import LocalProtocolError

__all__ = ["as_numpy_tensors", "is_torch_tensor"]


def is_torch_tensor(value: Any) -> bool:
    """True for a ``torch.Tensor`` (or subclass), without importing torch."""
    return any(c.__module__.split(".")[0] == "torch" and c.__name__ == "Tensor"
               for c in type(value).__mro__)


def _view(name: str, tensor: Any) -> Any:
    device = getattr(getattr(tensor, "device", None), "type", "cpu")
    if device != "cpu":
        raise LocalProtocolError(f"tensor {name!r} is on {device}: move it to the CPU first")
    try:
        return tensor.detach().numpy()
    except (TypeError, RuntimeError) as exc:  # e.g. bfloat16, which numpy cannot hold
        raise LocalProtocolError(f"tensor {name!r} cannot be viewed as numpy: {exc}") from exc


class _Converted(dict):
    """A plain mapping of numpy views that keeps the source mapping's ``meta``."""

    meta: Any = None


def as_numpy_tensors(tensors: Mapping) -> Mapping:
    """``tensors`` with every torch CPU tensor replaced by a numpy view of it (others as is)."""
    if not any(is_torch_tensor(v) for v in tensors.values()):
        return tensors
    out = _Converted((k, _view(k, v) if is_torch_tensor(v) else v) for k, v in tensors.items())
    out.meta = getattr(tensors, "meta", None)
    return out
