"""A pool of large, 64-byte aligned payload buffers, reused once nothing refers to them.

Writing fresh memory costs page faults (on this machine a new buffer is
written at a fraction of memcpy speed), so a link that receives one large
frame after another should receive into buffers it has touched before.  Pass
a :class:`PayloadPool` as ``FrameDecoder(allocate_payload=...)``: a buffer goes
back into service as soon as the application has dropped every frame,
message, view or array that came from it -- which the pool sees from the
buffer's reference count, since every view of it (memoryview, numpy array,
cffi buffer) keeps it alive.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from cellnet.wire.frame import PAYLOAD_ALIGN

__all__ = ["PayloadPool"]


class PayloadPool:
    """Hands out aligned writable buffers for payloads, recycling unreferenced ones."""

    def __init__(self, max_buffers: int = 4) -> None:
        if type(max_buffers) is not int or max_buffers < 1:
            raise ValueError(f"max_buffers must be a positive int, got {max_buffers!r}")
        self.max_buffers = max_buffers
        self._raw: list[np.ndarray] = []
        #: How many requests were served by a recycled buffer.
        self.reused = 0

    def _idle(self, index: int) -> bool:
        # references: the pool's list and getrefcount's own argument
        return sys.getrefcount(self._raw[index]) == 2

    def __call__(self, ftype: Any, flags: Any, headers: Any, nbytes: int) -> memoryview:
        """``allocate_payload`` signature: a writable aligned view of exactly ``nbytes``."""
        need = nbytes + PAYLOAD_ALIGN
        best = -1
        for i in range(len(self._raw)):
            size = self._raw[i].nbytes
            if need <= size <= 2 * need and self._idle(i):
                if best < 0 or size < self._raw[best].nbytes:
                    best = i
        if best >= 0:
            self.reused += 1
            raw = self._raw[best]
        else:
            raw = np.empty(need, dtype=np.uint8)
            if len(self._raw) < self.max_buffers:
                self._raw.append(raw)
            else:
                idle = [i for i in range(len(self._raw)) if self._idle(i)]
                if idle:  # replace the smallest idle buffer
                    self._raw[min(idle, key=lambda i: self._raw[i].nbytes)] = raw
        start = -raw.ctypes.data % PAYLOAD_ALIGN
        return memoryview(raw[start : start + nbytes])
