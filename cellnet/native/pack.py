"""Tensor pack: encode a dict of numpy arrays + CBOR metadata, decode zero-copy.

The byte format lives in ``native/src/pack.c``; this module only turns arrays
into ``cn_pack_item`` records and pack entries back into read-only numpy views.
Encoding copies each tensor once (into ``out`` or a fresh buffer) while
checksumming it, or not at all (:func:`encode_segments`).  Decoding costs one
native call plus one ``np.frombuffer`` per tensor, whatever the payload size,
apart from the optional CRC pass over the data.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Collection, Iterator, Mapping

import cbor2
import numpy as np

from cellnet.errors import BufferTooSmallError, CorruptDataError, InvalidArgumentError
from cellnet.native import dtypes
from cellnet.native._loader import ffi, lib
from cellnet.native._status import check

_ZEROS = memoryview(bytes(lib.CN_PACK_ALIGN))
_META_SCALARS = (str, bytes, int, float, bool, type(None))


@dataclasses.dataclass(frozen=True)
class PackLimits:
    """Bounds a decoder enforces on an untrusted pack (LimitExceededError above them)."""

    max_tensors: int = lib.CN_PACK_DEFAULT_MAX_TENSORS
    max_ndim: int = lib.CN_PACK_MAX_NDIM
    max_name_len: int = lib.CN_PACK_DEFAULT_MAX_NAME_LEN
    max_meta_len: int = lib.CN_PACK_DEFAULT_MAX_META_LEN
    max_total_len: int = 2**64 - 1

    def __post_init__(self) -> None:
        bounds = {"max_tensors": 2**32 - 1, "max_ndim": lib.CN_PACK_MAX_NDIM,
                  "max_name_len": 2**32 - 1, "max_meta_len": 2**64 - 1,
                  "max_total_len": 2**64 - 1}
        for name, top in bounds.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
                raise InvalidArgumentError(f"PackLimits.{name} must be an int in [1, {top}]")

    def _cdata(self):
        c = ffi.new("cn_pack_limits *")
        for f in dataclasses.fields(self):
            setattr(c, f.name, getattr(self, f.name))
        return c


# ----------------------------------------------------------------- encode
def _check_meta(obj, depth: int = 0) -> None:
    if depth > 64:
        raise TypeError("pack metadata is nested too deeply (> 64 levels)")
    if isinstance(obj, _META_SCALARS):
        return
    if isinstance(obj, list | tuple):
        for v in obj:
            _check_meta(v, depth + 1)
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, _META_SCALARS):
                raise TypeError(f"pack metadata key {k!r} is not a plain scalar")
            _check_meta(v, depth + 1)
        return
    raise TypeError(f"pack metadata holds {type(obj).__name__}; only dict/list/str/bytes/"
                    f"int/float/bool/None are allowed")


def _meta_bytes(meta: Mapping | None) -> bytes:
    if meta is None:
        return b""
    if not isinstance(meta, Mapping):
        raise TypeError(f"pack metadata must be a mapping, not {type(meta).__name__}")
    _check_meta(meta)
    try:
        return cbor2.dumps(dict(meta))
    except (cbor2.CBOREncodeError, ValueError, OverflowError) as exc:
        raise TypeError(f"pack metadata cannot be encoded as CBOR: {exc}") from exc


class _Plan:
    """Arrays, metadata and native item records of one pack, laid out."""

    def __init__(self, tensors: Mapping, meta: Mapping | None, bf16_names: Collection[str]):
        if not isinstance(tensors, Mapping):
            raise TypeError(f"tensors must be a mapping of name -> array, not "
                            f"{type(tensors).__name__}")
        bf16 = frozenset(bf16_names)
        unknown = bf16 - set(tensors)
        if unknown:
            raise InvalidArgumentError(f"bf16_names not among the tensors: {sorted(unknown)}")
        self.arrays: list[np.ndarray] = []
        self.meta = _meta_bytes(meta)
        self.items = ffi.new("cn_pack_item[]", len(tensors))
        self._keep: list = []
        for i, (name, value) in enumerate(tensors.items()):
            if not isinstance(name, str):
                raise TypeError(f"tensor names must be str, got {type(name).__name__}")
            arr = np.asarray(value)
            code = dtypes.to_cn(arr.dtype, bf16=name in bf16)
            if not arr.flags.c_contiguous:  # one copy, only for these (keeps 0-d as 0-d)
                arr = np.ascontiguousarray(arr)
            raw = name.encode("utf-8")
            shape = ffi.new("uint64_t[]", arr.shape or (0,))
            it = self.items[i]
            it.name, it.name_len = ffi.from_buffer(raw), len(raw)
            it.dtype, it.ndim, it.shape = code, arr.ndim, shape
            it.data = ffi.from_buffer(arr.reshape(-1).view(np.uint8)) if arr.size else ffi.NULL
            self._keep += (raw, shape, it.name, it.data)
            self.arrays.append(arr)
        head, total = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        check(lib.cn_pack_plan(self.items, len(tensors), len(self.meta), head, total),
              "pack plan")
        self.head_len, self.total_len = head[0], total[0]

    def write(self, buf, copy_data: bool) -> None:
        cbuf = ffi.from_buffer(buf, require_writable=True)
        check(lib.cn_pack_write(self.items, len(self.arrays), self.meta, len(self.meta), cbuf,
                                len(cbuf), int(copy_data)), "pack write")


def packed_size(tensors: Mapping, meta: Mapping | None = None, *,
                bf16_names: Collection[str] = ()) -> int:
    """Bytes :func:`encode` needs for these tensors and metadata."""
    return _Plan(tensors, meta, bf16_names).total_len


def encode(tensors: Mapping, meta: Mapping | None = None, out=None, *,
           bf16_names: Collection[str] = ()) -> memoryview:
    """Pack ``tensors`` (name -> array) and ``meta`` into one buffer; return its bytes.

    ``out``: a reused writable buffer (the pack fills its start; BufferTooSmallError
    if it is too small), else a fresh one is allocated.  ``bf16_names``: uint16
    arrays that carry bfloat16 bit patterns (when ml_dtypes is not installed).
    """
    plan = _Plan(tensors, meta, bf16_names)
    if out is None:
        out = np.empty(plan.total_len, dtype=np.uint8)
    view = memoryview(out)
    if view.readonly:
        raise TypeError("out must be a writable buffer")
    if not view.c_contiguous:
        raise InvalidArgumentError("out must be a contiguous buffer")
    view = view.cast("B")
    if view.nbytes < plan.total_len:
        raise BufferTooSmallError(
            f"out holds {view.nbytes} bytes, the pack needs {plan.total_len}",
            lib.CN_E_NOSPACE)
    view = view[: plan.total_len]
    plan.write(view, copy_data=True)
    return view


def encode_segments(tensors: Mapping, meta: Mapping | None = None, *,
                    bf16_names: Collection[str] = ()) -> list[memoryview]:
    """The pack as segments (head, each tensor's own memory, zero padding): no data copy.

    Concatenated, the segments equal :func:`encode`'s bytes; the tensor
    segments reference the input arrays, so do not modify them until sent.
    """
    plan = _Plan(tensors, meta, bf16_names)
    head = np.empty(plan.head_len, dtype=np.uint8)
    plan.write(head, copy_data=False)
    segs = [memoryview(head).cast("B")]
    items = plan.items
    for i, arr in enumerate(plan.arrays):
        nbytes = items[i].nbytes
        if nbytes:
            segs.append(memoryview(arr.reshape(-1).view(np.uint8)))
        nxt = items[i + 1].data_off if i + 1 < len(plan.arrays) else plan.total_len
        pad = nxt - items[i].data_off - nbytes
        if pad:
            segs.append(_ZEROS[:pad])
    return segs


# ----------------------------------------------------------------- decode
def _decode_meta(raw: memoryview) -> dict:
    if not raw.nbytes:
        return {}
    fp = io.BytesIO(raw)
    try:
        meta = cbor2.CBORDecoder(fp).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError,
            OverflowError, MemoryError) as exc:
        raise CorruptDataError(f"pack metadata is not valid CBOR: {exc}") from exc
    if fp.tell() != raw.nbytes:
        raise CorruptDataError("pack metadata has trailing bytes after its CBOR item")
    if not isinstance(meta, dict):
        raise CorruptDataError(f"pack metadata is a {type(meta).__name__}, not a map")
    try:
        _check_meta(meta)
    except TypeError as exc:
        raise CorruptDataError(f"pack metadata: {exc}") from exc
    return meta


def _entry_dtype() -> np.dtype:
    """numpy view of ``cn_pack_entry`` (offsets taken from the compiled struct)."""
    fields = {"name_off": "<u8", "name_len": "<u4", "dtype": "<i4", "ndim": "<u4",
              "data_off": "<u8", "nbytes": "<u8", "shape": ("<u8", lib.CN_PACK_MAX_NDIM)}
    return np.dtype({"names": list(fields), "formats": list(fields.values()),
                     "offsets": [ffi.offsetof("cn_pack_entry", f) for f in fields],
                     "itemsize": ffi.sizeof("cn_pack_entry")})


_ENTRY = _entry_dtype()


class TensorPack(Mapping[str, np.ndarray]):
    """A decoded pack: read-only numpy views over the pack's buffer, plus ``meta``."""

    def __init__(self, view: memoryview, entries, n: int, meta: dict):
        self._view = view
        self._index: dict[str, int] = {}
        self._arrays: list[np.ndarray] = []
        self.meta = meta
        table = np.frombuffer(ffi.buffer(entries), dtype=_ENTRY, count=n)
        self._codes: list[int] = table["dtype"].tolist()
        head = bytes(view[: int(table["data_off"].min(initial=view.nbytes))])
        rows = zip(table["name_off"].tolist(), table["name_len"].tolist(),
                   table["ndim"].tolist(), table["data_off"].tolist(),
                   table["shape"][:, : int(table["ndim"].max(initial=0))].tolist(),
                   self._codes, strict=True)
        by_code = {code: dtypes.from_cn(code) for code in set(self._codes)}
        # A read-only uint8 array as the base: numpy then refuses to make views writable
        # (an ndarray built straight on the memoryview would unwrap it to a writable object).
        base = np.frombuffer(view, dtype=np.uint8)
        for i, (name_off, name_len, ndim, data_off, shape, code) in enumerate(rows):
            try:
                name = head[name_off : name_off + name_len].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorruptDataError(f"tensor {i} has a name that is not UTF-8") from exc
            if name in self._index:
                raise CorruptDataError(f"tensor name {name!r} appears twice")
            try:
                arr = np.ndarray(shape[:ndim], by_code[code], buffer=base, offset=data_off)
            except (ValueError, TypeError, OverflowError) as exc:  # dims numpy cannot hold
                raise CorruptDataError(f"tensor {name!r}: shape {shape[:ndim]}: {exc}") from exc
            self._index[name] = i
            self._arrays.append(arr)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[self._index[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """Length of the whole pack in bytes."""
        return self._view.nbytes

    def cn_dtype(self, name: str) -> int:
        """The native dtype code of a tensor (tells raw bfloat16 from uint16)."""
        return self._codes[self._index[name]]

    def verify(self, name: str | None = None) -> None:
        """Check the data CRC of one tensor (or all); raise ChecksumError on mismatch."""
        i = -1 if name is None else self._index[name]
        cbuf = ffi.from_buffer(self._view)
        check(lib.cn_pack_verify(cbuf, len(cbuf), i), "pack verify")

    def __repr__(self) -> str:
        return f"TensorPack({len(self)} tensors, {self.nbytes} bytes)"


def decode(buf, *, verify: bool = True, limits: PackLimits | None = None) -> TensorPack:
    """Decode a pack from ``buf`` into zero-copy, read-only views (see TensorPack).

    The head is always validated; ``verify=True`` also checks every tensor's CRC
    (otherwise call ``TensorPack.verify()`` later).  Bytes after the pack's own
    length are ignored.
    """
    view = memoryview(buf)
    if not view.c_contiguous:
        raise InvalidArgumentError("pack buffer must be contiguous")
    view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    view = view.toreadonly()
    cbuf = ffi.from_buffer(view)
    info = ffi.new("cn_pack_info *")
    lim = (limits or PackLimits())._cdata()
    check(lib.cn_pack_open(cbuf, len(cbuf), lim, info), "pack open")
    view = view[: info.total_len]
    n = info.n_tensors
    entries = ffi.new("cn_pack_entry[]", n)
    check(lib.cn_pack_entries(cbuf, info.total_len, entries, n), "pack entries")
    meta = _decode_meta(view[info.meta_off : info.meta_off + info.meta_len])
    pack = TensorPack(view, entries, n, meta)
    if verify:
        pack.verify()
    return pack


__all__ = ["PackLimits", "TensorPack", "decode", "encode", "encode_segments", "packed_size"]
