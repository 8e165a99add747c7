"""Fold a streamed tensor pack into an aggregate tensor by tensor, never holding the whole update.

Theory of operation.  A tensor pack starts with its head (entry table,
shapes, names, per-tensor CRC32C), then each tensor's bytes at a 64-byte
aligned offset.  :class:`TensorAccumulatorSink` stages the head as it
arrives and opens it with ``cn_pack_open`` as soon as it is complete (the
call reports TRUNCATED with the info filled while the data is still
missing), checks every name, shape and dtype against the target *before*
anything is folded, then routes each later byte to the tensor it belongs to.
A tensor that lies inside one received piece is folded straight from that
piece; one that spans pieces is copied into a single staging buffer the size
of the largest tensor.  Every tensor's CRC is checked before it is folded.

:class:`StreamAccumulator` is the target: a running weighted sum with a
weight total **per tensor**.  A contribution whose stream dies half way has
only folded tensors that passed their own CRC, so each tensor's mean stays
the weighted mean over the contributions that delivered that tensor; such
contributions are counted in :attr:`StreamAccumulator.partial`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import cbor2
import numpy as np

from cellnet.errors import AggregationError, CellnetError
from cellnet.native import crc32c, dtypes, ffi, lib
from cellnet.native.aggregate import accumulate, finalize
from cellnet.stream._errors import StreamCorruptError, StreamLimitError, StreamUsageError
from cellnet.stream.sinks import Sink, StreamInfo

_HDR = 64  # fixed pack header length (cn_pack_header_len)
_FLOATS = frozenset([lib.CN_F16, lib.CN_BF16, lib.CN_F32, lib.CN_F64])


class StreamAccumulator:
    """Weighted sum of tensors folded one at a time, with a weight total per tensor."""

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise AggregationError(f"accumulator dtype must be float32 or float64, got {dtype}")
        self._acc: dict[str, np.ndarray] = {}
        self._weight: dict[str, float] = {}
        self._out: dict[str, np.dtype] = {}
        self._layout: dict[str, tuple[int, ...]] | None = None  # names and shapes expected
        self.count = 0  # complete contributions
        self.partial = 0  # contributions that stopped after folding some tensors

    def expect(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        """Check a whole update's names, shapes and dtypes before any of it is folded."""
        for name, (_shape, dt) in layout.items():
            if dtypes.to_cn(dt) not in _FLOATS:
                raise AggregationError(f"tensor {name!r} has dtype {dt}, not a float dtype")
        shapes = {name: tuple(shape) for name, (shape, _dt) in layout.items()}
        if self._layout is None:  # the first update fixes the layout (others may be in flight)
            self._layout = shapes
            return
        if shapes.keys() != self._layout.keys():
            raise AggregationError(f"tensor names differ: got {sorted(shapes)}, "
                                   f"expected {sorted(self._layout)}")
        for name, shape in shapes.items():
            if shape != self._layout[name]:
                raise AggregationError(f"tensor {name!r} has shape {shape}, "
                                       f"expected {self._layout[name]}")

    def fold(self, name: str, array: np.ndarray, weight: float) -> None:
        """``acc[name] += weight * array``."""
        acc = self._acc.get(name)
        if acc is None:
            acc = self._acc[name] = np.zeros(array.shape, self.dtype)
            self._weight[name] = 0.0
            self._out[name] = array.dtype
        accumulate(acc, array, weight)
        self._weight[name] += weight

    def commit(self) -> None:
        """One contribution arrived whole."""
        self.count += 1

    def discard(self, folded: int) -> None:
        """A contribution failed after ``folded`` tensors were folded."""
        if folded:
            self.partial += 1

    def weight(self, name: str) -> float:
        """Total weight folded into tensor ``name``."""
        return self._weight[name]

    def result(self) -> dict[str, np.ndarray]:
        """Each tensor's weighted mean, in the dtype of its first contribution."""
        if not self._acc:
            raise AggregationError("nothing has been folded")
        for name, w in self._weight.items():
            if w <= 0:
                raise AggregationError(f"tensor {name!r} has total weight {w}")
        return {n: finalize(a, self._weight[n], dtype=self._out[n]) for n, a in self._acc.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    off: int
    nbytes: int
    crc: int


@dataclasses.dataclass(frozen=True, slots=True)
class FoldedUpdate:
    """What a finished TensorAccumulatorSink returns: the pack's metadata and the weight."""

    meta: dict
    weight: float
    names: tuple[str, ...]
    nbytes: int = 0  # bytes the update streamed


Weight = float | Callable[[StreamInfo, dict], float]


class TensorAccumulatorSink(Sink):
    """A sink that folds a tensor-pack payload into ``target`` as each tensor completes.

    ``weight`` is a number or ``fn(info, pack_meta) -> number``; ``max_head``
    bounds the pack head (names, shapes, metadata) staged before it is parsed.
    Memory held: the head plus one staging buffer of the largest tensor.
    """

    def __init__(self, target: StreamAccumulator, weight: Weight = 1.0, *,
                 max_head: int = 80 << 20):
        self.target = target
        self._weight_arg = weight
        self.max_head = max_head
        self._reset()

    def _reset(self) -> None:
        self._info: StreamInfo | None = None
        self._head = bytearray()
        self._head_len = 0
        self._entries: list[_Entry] | None = None
        self._meta: dict = {}
        self._w = 0.0
        self._i = 0  # next tensor to complete
        self._filled = 0  # its bytes staged so far
        self._stage: np.ndarray | None = None
        self._folded = 0

    @property
    def staging_bytes(self) -> int:
        """Bytes of the staging buffer (at most the largest tensor)."""
        return 0 if self._stage is None else self._stage.nbytes

    def open(self, info: StreamInfo) -> None:
        if not info.tensor_pack:
            raise StreamUsageError(f"stream {info.stream_id} is not a tensor pack")
        if info.size < _HDR:
            raise StreamCorruptError(f"stream {info.stream_id}: {info.size} bytes cannot hold "
                                     f"a tensor pack", info.stream_id)
        self._info = info

    def write(self, offset: int, data: memoryview) -> int:
        crc = crc32c(data)
        pos, end = offset, offset + data.nbytes
        if self._entries is None:
            pos = self._take_head(pos, data)
        while pos < end and self._entries is not None and self._i < len(self._entries):
            pos = self._route(pos, data[pos - offset :])
        return crc

    # ------------------------------------------------------------ the head
    def _take_head(self, pos: int, data: memoryview) -> int:
        need = (self._head_len or _HDR) - len(self._head)
        k = min(need, data.nbytes)
        self._head += data[:k]
        pos += k
        if not self._head_len and len(self._head) >= _HDR:
            hl = int.from_bytes(self._head[16:24], "little")
            if not _HDR <= hl <= min(self.max_head, self._info.size):
                raise StreamLimitError(f"stream {self._info.stream_id}: pack head of {hl} bytes "
                                       f"(limit {min(self.max_head, self._info.size)})",
                                       self._info.stream_id)
            self._head_len = hl
            if hl > _HDR:
                return self._take_head(pos, data[k:])
        if self._head_len and len(self._head) == self._head_len:
            self._parse_head()
        return pos

    def _parse_head(self) -> None:
        sid, buf = self._info.stream_id, self._head
        info = ffi.new("cn_pack_info *")
        st = lib.cn_pack_open(ffi.from_buffer(buf), len(buf), ffi.NULL, info)
        if st not in (lib.CN_OK, lib.CN_E_TRUNCATED) or info.head_len != len(buf):
            raise StreamCorruptError(f"stream {sid}: the tensor pack head is invalid "
                                     f"({ffi.string(lib.cn_strerror(st)).decode()})", sid)
        if info.total_len != self._info.size:
            raise StreamCorruptError(f"stream {sid}: the pack says {info.total_len} bytes, "
                                     f"the stream {self._info.size}", sid)
        n = info.n_tensors
        raw = ffi.new("cn_pack_entry[]", n)
        if lib.cn_pack_entries(ffi.from_buffer(buf), len(buf), raw, n) != lib.CN_OK:
            raise StreamCorruptError(f"stream {sid}: the pack entry table is invalid", sid)
        entries = []
        try:
            for e in raw:
                name = bytes(buf[e.name_off : e.name_off + e.name_len]).decode("utf-8")
                entries.append(_Entry(name, dtypes.from_cn(e.dtype), tuple(e.shape[0 : e.ndim]),
                                      e.data_off, e.nbytes, e.crc))
            meta = cbor2.loads(bytes(buf[info.meta_off : info.meta_off + info.meta_len])) \
                if info.meta_len else {}
        except (UnicodeDecodeError, ValueError, CellnetError) as exc:
            raise StreamCorruptError(f"stream {sid}: pack head: {exc}", sid) from exc
        if len({e.name for e in entries}) != n or not isinstance(meta, dict):
            raise StreamCorruptError(f"stream {sid}: duplicate tensor names or bad metadata", sid)
        w = self._weight_arg
        w = float(w(self._info, meta) if callable(w) else w)
        if not (w >= 0 and np.isfinite(w)):
            raise StreamUsageError(f"stream {sid}: weight must be finite and >= 0, got {w}")
        try:
            self.target.expect({e.name: (e.shape, e.dtype) for e in entries})
        except AggregationError as exc:
            raise StreamUsageError(f"stream {sid}: update refused: {exc}", sid) from exc
        self._entries, self._meta, self._w = entries, meta, w
        self._head = bytearray()  # the head is no longer needed
        self._fold_empty()

    # ------------------------------------------------------------ tensor data
    def _route(self, pos: int, data: memoryview) -> int:
        """Consume bytes from ``data`` (which starts at payload offset ``pos``); new pos."""
        e = self._entries[self._i]
        if pos < e.off:  # zero padding between tensors
            return min(e.off, pos + data.nbytes)
        k = min(e.off + e.nbytes - pos, data.nbytes)
        if self._filled == 0 and k == e.nbytes:
            self._fold(e, data[:k])  # the whole tensor is in this piece: no staging copy
        else:
            if self._stage is None:
                self._stage = np.empty(max(x.nbytes for x in self._entries), np.uint8)
            self._stage[self._filled : self._filled + k] = np.frombuffer(data[:k], np.uint8)
            self._filled += k
            if self._filled == e.nbytes:
                self._fold(e, memoryview(self._stage)[: e.nbytes])
        return pos + k

    def _fold(self, e: _Entry, view: memoryview) -> None:
        if crc32c(view) != e.crc:
            raise StreamCorruptError(f"stream {self._info.stream_id}: tensor {e.name!r} fails "
                                     f"its CRC32C", self._info.stream_id)
        arr = np.frombuffer(view, dtype=e.dtype).reshape(e.shape)
        self.target.fold(e.name, arr, self._w)
        self._folded += 1
        self._i += 1
        self._filled = 0
        self._fold_empty()

    def _fold_empty(self) -> None:
        while self._i < len(self._entries) and self._entries[self._i].nbytes == 0:
            e = self._entries[self._i]
            self.target.fold(e.name, np.zeros(e.shape, e.dtype), self._w)
            self._folded += 1
            self._i += 1

    def finish(self) -> FoldedUpdate:
        if self._entries is None or self._i != len(self._entries):
            raise StreamCorruptError("stream ended before every tensor arrived",
                                     self._info.stream_id if self._info else None)
        self.target.commit()
        out = FoldedUpdate(self._meta, self._w, tuple(e.name for e in self._entries),
                           self._info.size)
        self._reset()
        return out

    def abort(self) -> None:
        if self._info is not None:
            self.target.discard(self._folded)
        self._reset()
