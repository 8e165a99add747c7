"""FoldSink / RoundAccumulator on their own: pieces of any size, CRC and model checks."""

from __future__ import annotations

import numpy as np
import pytest

from cellnet.errors import AggregationError
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.runtime.inplace import FoldSink, ResultFold, RoundAccumulator
from cellnet.stream import StreamInfo
from cellnet.stream._errors import StreamCorruptError, StreamUsageError

MODEL = {"a": np.zeros((31, 7), np.float32), "b": np.zeros(1001, np.float32),
         "c": np.zeros(0, np.float32)}


def _update(seed: float) -> dict[str, np.ndarray]:
    return {n: np.full(a.shape, seed, np.float32) + np.arange(a.size, dtype=np.float32)
            .reshape(a.shape) for n, a in MODEL.items()}


def _fold() -> ResultFold:
    return ResultFold("t1", RoundAccumulator(MODEL), lambda site, meta: meta["steps"])


def _stream(fold: ResultFold, site: str, pack: bytes, sizes, stop: int | None = None):
    sink = FoldSink(fold, site)
    sink.open(StreamInfo(1, len(pack), 64, {}, tensor_pack=True))
    view, pos, i = memoryview(pack), 0, 0
    while pos < len(pack) and (stop is None or pos < stop):
        n = sizes[i % len(sizes)]
        sink.write(pos, view[pos : pos + n])
        pos, i = min(len(pack), pos + n), i + 1
    return sink


def _pack(seed: float, steps: float) -> bytes:
    return bytes(DXO(DataKind.WEIGHTS, _update(seed), {"steps": steps}).to_bytes())


@pytest.mark.parametrize("sizes", [[1], [7, 13, 3], [4096], [1 << 20]])
def test_pieces_of_any_size_fold_to_the_weighted_mean(sizes):
    fold = _fold()
    for site, seed, steps in (("s1", 1.0, 1.0), ("s2", 5.0, 3.0)):
        _stream(fold, site, _pack(seed, steps), sizes).finish()
    assert sorted(fold.committed) == ["s1", "s2"] and not fold.tainted
    got = fold.accumulator.result()
    for name in ("a", "b"):
        want = (_update(1.0)[name] * 1 + _update(5.0)[name] * 3) / 4
        np.testing.assert_array_equal(got[name], want)
    assert got["c"].shape == (0,)


def test_a_stream_cut_after_a_partial_fold_taints_the_fold():
    fold = _fold()
    pack = _pack(1.0, 1.0)
    sink = _stream(fold, "s1", pack, [100], stop=len(pack) // 2)
    assert sink.folded
    sink.abort()
    assert fold.tainted == {"s1"} and "s1" in fold.failed and fold.failure("s1").is_set()


def test_a_corrupt_tensor_fails_its_crc_and_a_wrong_shape_is_refused_before_any_fold():
    fold = _fold()
    pack = bytearray(_pack(1.0, 1.0))
    pack[len(pack) // 2] ^= 0xFF  # inside tensor b
    with pytest.raises(StreamCorruptError, match="CRC32C"):
        _stream(fold, "s1", bytes(pack), [512])
    bad = bytes(DXO(DataKind.WEIGHTS, {"a": np.zeros(5, np.float32)}, {"steps": 1}).to_bytes())
    with pytest.raises(StreamUsageError, match="does not match the model"):
        _stream(fold, "s2", bad, [4096])


def test_closed_fold_refuses_more_data_and_duplicates_are_refused():
    fold = _fold()
    pack = _pack(1.0, 1.0)
    _stream(fold, "s1", pack, [4096]).finish()
    with pytest.raises(AggregationError, match="already sent"):
        _stream(fold, "s1", pack, [4096])
    fold.close()
    with pytest.raises(AggregationError, match="wait has ended"):
        _stream(fold, "s2", pack, [4096])


async def test_finish_lets_a_folding_stream_complete_and_cuts_one_that_stalls(autojump_clock):
    import trio

    fold = _fold()
    pack = _pack(1.0, 1.0)
    done = _stream(fold, "s1", pack, [256], stop=len(pack) // 2)
    stalled = _stream(_fold_other := _fold(), "s2", pack, [256], stop=len(pack) // 2)

    async def complete_later():
        await trio.sleep(1)
        view = memoryview(pack)
        start = -(-(len(pack) // 2) // 256) * 256  # where _stream stopped
        for pos in range(start, len(pack), 256):
            done.write(pos, view[pos : pos + 256])
        done.finish()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(complete_later)
        await fold.finish(timeout=10)
    assert list(fold.committed) == ["s1"] and not fold.tainted and fold.closed
    await _fold_other.finish(timeout=5)
    assert _fold_other.tainted == {"s2"} and _fold_other.closed
    assert stalled.folded
