"""In-place aggregation of task results on the server job cell, folded as their chunks arrive.

Theory of operation.  A site answers a task with its result DXO as a tensor
payload (:meth:`~cellnet.fl.dxo.DXO.to_payload`); above the link's stream
threshold the reply travels as a stream of chunks, and its headers (task id,
cmi session headers) arrive with the stream's OPEN, before any data.
:class:`InPlaceResults` registers a stream sink on the server job cell for
task-result replies (``(fl_task, run)`` replies addressed to it): a reply
stream whose ``__task_id__`` names a task with an open :class:`ResultFold`
goes into a :class:`FoldSink` that folds each tensor into the round's
:class:`RoundAccumulator` as soon as it is complete and CRC-checked (the
pack head, with the kind, meta and the weight key, is parsed before the
first fold).  No whole result is ever reassembled; the reply handed to the
controller carries a :class:`~cellnet.stream.tensor_sink.FoldedUpdate`
(the result's meta) instead of arrays.  Every other stream (another topic,
an unknown or closed task) is received into one buffer as usual.

Failure and exactness.  A stream refused at its OPEN or failing before its
first fold is simply not counted.  One that fails after folding tensors
(link loss, RESET, a check failing mid-way) has put part of an update into
the shared sum that cannot be taken out again without its data, so its site
is recorded in :attr:`ResultFold.tainted`: the workflow must not use that
sum (ScatterAndGather gathers the round again from the sites whose results
arrived whole).  When the task's wait ends (:meth:`ResultFold.finish`), new
result streams of the task are refused at their OPEN (nothing received),
those already folding may complete, up to the task timeout; one cut then
taints the fold the same way.  A site
whose stream failed is reported at once (:meth:`ResultFold.failure`) so the
controller does not wait for a reply that will never come.

The session check of the reply headers runs at the OPEN (a refused peer's
data never reaches the sum).  Memory: the accumulator (one model, finalized
in place) plus, per stream in flight, its pack head: no staging buffer,
each received piece is folded where it lies in the receive window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import trio

from cellnet.defs import CMIHeader, MetaKey
from cellnet.errors import AggregationError
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.runtime import _proto as P
from cellnet.message import MessageHeaderKey, MessageType
from cellnet.native import crc32c
from cellnet.native.aggregate import accumulate, finalize
from cellnet.stream import BufferSink, Sink, StreamInfo
from cellnet.stream._errors import StreamCorruptError
from cellnet.stream.tensor_sink import FoldedUpdate, StreamAccumulator, TensorAccumulatorSink

__all__ = ["FoldSink", "InPlaceResults", "ResultFold", "RoundAccumulator", "in_place_results"]

log = logging.getLogger("cellnet.fl.inplace")
_ORIGIN, _MSG_TYPE = MessageHeaderKey.ORIGIN.value, MessageHeaderKey.MSG_TYPE.value
_REPLY = MessageType.REPLY.value

#: ``weight(site, pack_meta) -> float``; raises AggregationError to refuse the result.
WeightFn = Callable[[str, Mapping[str, Any]], float]


class RoundAccumulator(StreamAccumulator):
    """A running weighted sum over a model's variables (updates may hold a subset of them)."""

    def __init__(self, model: Mapping[str, np.ndarray], dtype: Any = np.float32):
        super().__init__(dtype)
        self._model = {name: (tuple(a.shape), a.dtype) for name, a in model.items()}
        self.closed = False
        self.seconds = 0.0  # spent folding

    def expect(self, layout: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        if not layout:
            raise AggregationError("the update holds no arrays")
        for name, (shape, _dt) in layout.items():
            ref = self._model.get(name)
            if ref is None or tuple(shape) != ref[0]:
                want = "no such variable" if ref is None else f"the model's is {list(ref[0])}"
                raise AggregationError(f"{name!r} {list(shape)} does not match the model "
                                       f"({want})")
        saved, self._layout = self._layout, None
        try:
            super().expect(layout)  # the float-dtype check
        finally:
            self._layout = saved

    def fold(self, name: str, array: np.ndarray, weight: float) -> None:
        if self.closed:
            raise AggregationError("the task's wait has ended: result not taken")
        t0 = time.perf_counter()
        super().fold(name, array, weight)
        self.seconds += time.perf_counter() - t0

    def fold_piece(self, name: str, shape: tuple[int, ...], start: int, piece: np.ndarray,
                   weight: float) -> None:
        """``acc[name].flat[start : start + piece.size] += weight * piece`` (no weight counted)."""
        if self.closed:
            raise AggregationError("the task's wait has ended: result not taken")
        t0 = time.perf_counter()
        acc = self._acc.get(name)
        if acc is None:
            acc = self._acc[name] = np.zeros(shape, self.dtype)
            self._weight[name] = 0.0
            self._out[name] = piece.dtype
        accumulate(acc.reshape(-1)[start : start + piece.size], piece, weight)
        self.seconds += time.perf_counter() - t0

    def tensor_done(self, name: str, weight: float) -> None:
        """Every piece of one update's tensor ``name`` was folded with ``weight``."""
        self._weight[name] += weight

    def result(self) -> dict[str, np.ndarray]:
        """Each variable's weighted mean, finalized in the accumulator's memory when it can."""
        if not self._acc:
            raise AggregationError("nothing has been folded")
        out = {}
        for name, acc in self._acc.items():
            w = self._weight[name]
            if w <= 0:
                raise AggregationError(f"tensor {name!r} has total weight {w}")
            dt = self._model[name][1]
            out[name] = finalize(acc, w, out=acc) if acc.dtype == dt else \
                finalize(acc, w, dtype=dt)
        self._acc = {}
        return out


class ResultFold:
    """One task's in-place aggregation: its accumulator, who committed, who failed."""

    def __init__(self, task_id: str, accumulator: RoundAccumulator, weight: WeightFn):
        self.task_id = task_id
        self.accumulator = accumulator
        self.weight = weight
        self.committed: dict[str, FoldedUpdate] = {}  # site -> its update, in arrival order
        self.failed: dict[str, str] = {}
        self.tainted: set[str] = set()  # sites whose partial updates are in the sum
        self.kind: DataKind | None = None
        self.streamed = 0  # results folded from a stream
        self._active: dict[str, FoldSink] = {}
        self._events: dict[str, trio.Event] = {}
        self.accepting = True  # new result streams may begin
        self._idle = trio.Event()  # set whenever no stream is folding
        self._idle.set()

    @property
    def closed(self) -> bool:
        return self.accumulator.closed

    def failure(self, site: str) -> trio.Event:
        """Set when ``site``'s result stream fails (its reason in :attr:`failed`)."""
        ev = self._events.get(site)
        if ev is None:
            ev = self._events[site] = trio.Event()
        return ev

    def check_kind(self, site: str, meta: Mapping[str, Any]) -> DataKind:
        """The result's kind, which must be an update kind and the same for every site."""
        try:
            kind = DataKind(meta.get(str(MetaKey.DATA_KIND)))
        except ValueError:
            raise AggregationError(f"{site}: the result carries no valid data kind") from None
        if kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
            raise AggregationError(f"{site}: cannot aggregate a {kind} DXO")
        if self.kind is not None and kind != self.kind:
            raise AggregationError(f"{site}: sent {kind}, this round holds {self.kind}")
        self.kind = kind
        return kind

    def begin(self, site: str, sink: FoldSink) -> None:
        if self.closed or not self.accepting:
            raise AggregationError("the task's wait has ended: result not taken")
        if site in self.committed or site in self._active:
            raise AggregationError(f"{site} already sent a result for this task")
        self._active[site] = sink
        self._idle = trio.Event()

    def _end(self, site: str) -> None:
        self._active.pop(site, None)
        if not self._active:
            self._idle.set()

    def commit(self, site: str, update: FoldedUpdate) -> None:
        self._end(site)
        self.committed[site] = update

    def fail(self, site: str, reason: str, folded: int) -> None:
        self._end(site)
        self.failed[site] = reason
        if folded:
            self.tainted.add(site)
        self.failure(site).set()

    def fold_whole(self, site: str, dxo: DXO) -> float:
        """Fold a result that arrived in one piece (a small one); its weight."""
        meta = {**dxo.meta, str(MetaKey.DATA_KIND): str(dxo.kind.value)}
        if site in self.committed or site in self._active:
            raise AggregationError(f"{site} already sent a result for this task")
        w = float(self.weight(site, meta))
        acc = self.accumulator
        acc.expect({n: (a.shape, a.dtype) for n, a in dxo.data.items()})
        self.check_kind(site, meta)
        for name, a in dxo.data.items():
            acc.fold(name, a, w)
        acc.commit()
        self.committed[site] = FoldedUpdate(meta, w, tuple(dxo.data), dxo.nbytes)
        return w

    async def finish(self, timeout: float) -> None:
        """End the task's wait: refuse new result streams, let those already folding
        complete (up to ``timeout`` seconds), then :meth:`close`."""
        self.accepting = False
        with trio.move_on_after(timeout):
            await self._idle.wait()
        self.close()

    def close(self) -> None:
        """No more folds: streams still folding are cut (and taint the sum if they folded)."""
        self.accepting = False
        self.accumulator.closed = True
        for site, sink in list(self._active.items()):
            if sink.folded:
                self.tainted.add(site)


class FoldSink(TensorAccumulatorSink):
    """A result stream folded into a :class:`ResultFold` (see the module docstring).

    Unlike its base class it stages nothing: every received piece of a tensor
    is folded at once (chunks are CRC-checked by the stream; the tensor's own
    CRC is checked when its last piece arrives, and a mismatch fails the
    stream *after* a partial fold, which taints the fold like any break).
    """

    def __init__(self, fold: ResultFold, site: str):
        super().__init__(fold.accumulator, self._weight)
        self.fold, self.site = fold, site
        self._error: str | None = None
        self._touched = False  # some piece of the update is in the sum
        self._tcrc = 0  # CRC32C of the current tensor's bytes so far
        self._elem = 0  # elements of the current tensor folded
        self._carry = b""  # bytes of a split element

    @property
    def folded(self) -> int:
        """Tensors folded completely, or 1 when only part of one was."""
        return self._folded or int(self._touched)

    def _route(self, pos: int, data: memoryview) -> int:
        e = self._entries[self._i]
        if pos < e.off:  # zero padding between tensors
            return min(e.off, pos + data.nbytes)
        k = min(e.off + e.nbytes - pos, data.nbytes)
        piece = data[:k]
        self._tcrc = crc32c(piece, self._tcrc)
        isz = e.dtype.itemsize
        if self._carry:
            take = min(isz - len(self._carry), k)
            self._carry += bytes(piece[:take])
            piece = piece[take:]
            if len(self._carry) == isz:
                self._fold_elems(e, self._carry)
                self._carry = b""
        whole = piece.nbytes - piece.nbytes % isz
        if whole:
            self._fold_elems(e, piece[:whole])
        if whole < piece.nbytes:
            self._carry = bytes(piece[whole:])
        self._filled += k
        if self._filled == e.nbytes:
            if self._tcrc != e.crc:
                raise StreamCorruptError(f"stream {self._info.stream_id}: tensor {e.name!r} "
                                         f"fails its CRC32C", self._info.stream_id)
            self.target.tensor_done(e.name, self._w)
            self._folded += 1
            self._i += 1
            self._filled = self._elem = self._tcrc = 0
            self._fold_empty()
        return pos + k

    def _fold_elems(self, e: Any, raw: Any) -> None:
        arr = np.frombuffer(raw, dtype=e.dtype)
        self.target.fold_piece(e.name, e.shape, self._elem, arr, self._w)
        self._elem += arr.size
        self._touched = True

    def _weight(self, info: StreamInfo, meta: dict) -> float:
        self.fold.check_kind(self.site, meta)
        return self.fold.weight(self.site, meta)

    def open(self, info: StreamInfo) -> None:
        self.fold.begin(self.site, self)
        try:
            super().open(info)
        except Exception as exc:
            self._error = str(exc)
            raise

    def write(self, offset: int, data: memoryview) -> int:
        try:
            return super().write(offset, data)
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            raise

    def finish(self) -> FoldedUpdate:
        out = super().finish()
        self.fold.streamed += 1
        self.fold.commit(self.site, out)
        return out

    def abort(self) -> None:
        folded = self.folded
        started = self._info is not None
        super().abort()
        if started:
            self.fold.fail(self.site, self._error or "the result stream failed mid-way", folded)


class InPlaceResults:
    """The server job cell's registry of open folds and its sink for task-result replies."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.folds: dict[str, ResultFold] = {}
        engine.cell.register_stream_sink(P.TASK_CHANNEL, P.TaskTopic.RUN, self._sink)

    def open(self, fold: ResultFold) -> None:
        self.folds[fold.task_id] = fold
        while len(self.folds) > 64:  # ended tasks stay a while: their late results are refused
            oldest = next(iter(self.folds))
            if not self.folds[oldest].closed:
                break
            del self.folds[oldest]

    def _site(self, headers: Mapping[str, Any]) -> str | None:
        origin = headers.get(_ORIGIN)
        suffix = f".{self.engine.job_id}"
        if not isinstance(origin, str) or not origin.endswith(suffix):
            return None
        site = origin[: -len(suffix)]
        return site if site in self.engine.clients else None

    def _sink(self, info: StreamInfo) -> Sink:
        h = info.headers
        fold = self.folds.get(h.get(P.TASK_ID)) if h.get(_MSG_TYPE) == _REPLY else None
        if fold is None or not info.tensor_pack or h.get(P.TASK_RC) != "OK":
            return BufferSink(pool=self.engine.cell.stream_buffers)
        site = self._site(h)
        if site is None:
            raise AggregationError(f"a task result from {h.get(_ORIGIN)!r}, not a job site")
        check = getattr(self.engine, "peer_check", None)
        verdict = check.check(h) if check is not None else None
        if verdict is None and check is not None and \
                h.get(CMIHeader.HEADER_CLIENT_NAME.value) != site:
            raise AggregationError(f"the result from {site} names another client")
        if verdict is not None:
            raise AggregationError(f"result from {site} refused: {verdict.reason}")
        return FoldSink(fold, site)


def in_place_results(engine: Any) -> InPlaceResults:
    """The engine's :class:`InPlaceResults` (created, and its sink registered, on first use)."""
    reg = getattr(engine, "_in_place_results", None)
    if reg is None or reg.engine is not engine:
        reg = InPlaceResults(engine)
        engine._in_place_results = reg
    return reg
