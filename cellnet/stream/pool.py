"""BufferPool: reuse large receive buffers once nothing references them, instead of fresh memory.

Why: on this kind of machine the first write to fresh (never touched) pages
costs more than the copy itself (page faults and zeroing run at a fraction of
memcpy speed, ``CEILINGS.md``), and a federated job receives a model of the
same size every round.  The pool remembers the buffers it handed out (the
numpy array that owns each one); a buffer is free again when the pool holds
the only reference to it -- every view, array or tensor pack made over it is
gone -- which CPython's reference count says exactly, with no callback from
the user.  Only buffers of at least ``min_bytes`` are pooled, at most
``max_buffers`` of them, and a free buffer is reused only for a request of
nearly its size, so a pooled gigabyte never serves a megabyte message.
"""

from __future__ import annotations

import sys

import numpy as np

from cellnet.wire.frame import PAYLOAD_ALIGN

__all__ = ["BufferPool"]

#: getrefcount(raw) when only the pool's list and the caller's loop variable hold ``raw``
_ONLY_POOL = 3


class BufferPool:
    """Hands out 64-byte aligned writable buffers, reusing released large ones."""

    def __init__(self, *, max_buffers: int = 2, min_bytes: int = 16 << 20, slack: float = 0.125):
        if type(max_buffers) is not int or max_buffers < 0:
            raise ValueError(f"max_buffers must be an int >= 0, got {max_buffers!r}")
        if type(min_bytes) is not int or min_bytes < 1:
            raise ValueError(f"min_bytes must be a positive int, got {min_bytes!r}")
        if not 0 <= slack <= 1:
            raise ValueError(f"slack must be in [0, 1], got {slack!r}")
        self.max_buffers = max_buffers
        self.min_bytes = min_bytes
        self.slack = slack
        self._owned: list[np.ndarray] = []
        #: buffers handed out again instead of allocated
        self.reused = 0

    def acquire(self, nbytes: int) -> memoryview:
        """A writable, aligned view of ``nbytes`` (contents undefined)."""
        if type(nbytes) is not int or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        if nbytes < self.min_bytes or not self.max_buffers:
            return _view(_alloc(nbytes), nbytes)
        most = nbytes + int(nbytes * self.slack) + PAYLOAD_ALIGN
        for raw in self._owned:
            if nbytes + PAYLOAD_ALIGN <= raw.nbytes <= most and sys.getrefcount(raw) == _ONLY_POOL:
                self.reused += 1
                return _view(raw, nbytes)
        raw = _alloc(nbytes)
        self._track(raw)
        return _view(raw, nbytes)

    def _track(self, raw: np.ndarray) -> None:
        if len(self._owned) >= self.max_buffers:
            free = [r for r in self._owned if sys.getrefcount(r) == _ONLY_POOL]
            if not free:
                return  # every pooled buffer is in use: this one is simply not pooled
            self._owned.remove(free[0])
        self._owned.append(raw)

    @property
    def pooled_bytes(self) -> int:
        """Bytes of the buffers the pool keeps (in use or free)."""
        return sum(r.nbytes for r in self._owned)

    def clear(self) -> None:
        """Forget every pooled buffer (in-use ones stay valid for their users)."""
        self._owned.clear()


def _alloc(nbytes: int) -> np.ndarray:
    return np.empty(nbytes + PAYLOAD_ALIGN, dtype=np.uint8)


def _view(raw: np.ndarray, nbytes: int) -> memoryview:
    start = -raw.ctypes.data % PAYLOAD_ALIGN
    return memoryview(raw[start : start + nbytes])
