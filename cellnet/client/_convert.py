"""Model arrays between a training script's formats (numpy, PyTorch) and what travels (numpy).

Theory of operation
-------------------
What travels is a tensor pack of numpy arrays, so :func:`to_numpy` turns
whatever a script sends into one and :func:`to_torch` turns received arrays
back into tensors, each **without copying** when the memory allows:

* A CPU tensor becomes ``tensor.detach().numpy()``: a view of the tensor's
  own storage.  Only a tensor on another device (``.cpu()``) or a
  non-contiguous one (a transposed view) is copied.  Sending is safe anyway:
  :func:`cellnet.client.send` packs the arrays before it returns.
* ``torch.bfloat16`` has no numpy dtype of its own; the tensor is viewed as
  ``int16`` and that memory as ``ml_dtypes.bfloat16`` (still no copy), which
  the tensor pack carries as bfloat16.  Without ml_dtypes (extra ``bf16``)
  a bfloat16 tensor is refused with a TypeError that says so.
* :func:`to_torch` uses ``torch.from_numpy`` (the tensor shares the array's
  memory), bfloat16 arrays through the same ``int16`` view.  A read-only
  array (a view into a received message) is copied first: torch cannot
  protect read-only memory, and training writes into its parameters.  The
  params of :func:`cellnet.client.receive` are writable arrays already, so
  for them there is no copy.

torch is never imported here unless a tensor is already at hand (or
:func:`to_torch` is called), so numpy-only scripts do not need it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from cellnet.errors import DTypeError
from cellnet.native import dtypes

__all__ = ["is_tensor", "to_numpy", "to_torch"]


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.Tensor`` (checked without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _bfloat16() -> np.dtype:
    bf16 = dtypes.BFLOAT16
    if bf16 is None:
        raise TypeError("bfloat16 tensors need the ml_dtypes package: "
                        "pip install 'cellnet[bf16]'")
    return bf16


def _tensor_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_sparse:
        t = t.to_dense()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.numpy()


def to_numpy(name: str, value: Any) -> np.ndarray:
    """``value`` (numpy array, torch tensor, number or nested list) as a C-contiguous array.

    No copy for a contiguous CPU tensor or array (see the module docstring);
    TypeError, naming ``name``, for anything that cannot travel.
    """
    if is_tensor(value):
        try:
            value = _tensor_to_numpy(value)
        except (TypeError, RuntimeError, NotImplementedError) as exc:  # complex, meta device...
            raise TypeError(f"model[{name!r}]: cannot send a {value.dtype} tensor: "
                            f"{exc}") from None
    elif not isinstance(value, np.ndarray | np.generic | int | float | list | tuple):
        raise TypeError(f"model[{name!r}] must be an array (numpy or torch), got "
                        f"{type(value).__name__}")
    arr = np.asarray(value, order="C")  # keeps 0-d shapes (np.ascontiguousarray would not)
    try:
        dtypes.to_cn(arr.dtype)
    except DTypeError as exc:
        raise TypeError(f"model[{name!r}]: {exc}") from None
    return arr


def to_torch(params: Mapping[str, Any], device: Any = None) -> dict[str, Any]:
    """``name -> torch.Tensor`` for received ``params`` (e.g. ``receive().params``).

    Ready for ``module.load_state_dict``.  Tensors share the arrays' memory
    when they are writable (no copy); read-only arrays are copied.
    ``device``: move the tensors there (a copy unless it is the CPU).
    """
    import torch

    bf16 = dtypes.BFLOAT16
    out = {}
    for name, value in params.items():
        if is_tensor(value):
            t = value
        else:
            arr = np.asarray(value)
            if not arr.flags.writeable:
                arr = arr.copy()
            if bf16 is not None and arr.dtype == bf16:
                t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
            else:
                try:
                    t = torch.from_numpy(arr)
                except TypeError as exc:
                    raise TypeError(f"params[{name!r}]: {exc}") from None
        out[str(name)] = t if device is None else t.to(device)
    return out
