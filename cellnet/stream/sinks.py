"""Where a received stream's bytes go: the Sink interface, BufferSink and FileSink.

A receiver calls ``open`` once the stream passed every limit (so a sink only
allocates for an accepted size), ``write`` for each chunk in offset order
(returning the chunk's CRC32C, computed while copying), then exactly one of
``finish`` (the whole payload checked: return the result) or ``abort``
(discard everything; a sink never exposes a payload that failed a check).

Zero-copy receive: before a chunk's bytes arrive, the link may ask
:meth:`Sink.place` for the spot the chunk will end up in and have the frame
decoder (and the TLS engine) write it there directly; such a chunk, already
checked against its CRC, then comes back through :meth:`Sink.write_checked`,
which has nothing left to copy.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from cellnet.native import copy_crc32c, crc32c, ffi
from cellnet.native.pack import decode as decode_pack
from cellnet.stream._errors import StreamUsageError
from cellnet.stream._prefault import STEP, prefault
from cellnet.wire.frame import aligned_buffer, as_byte_view


@dataclasses.dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a STREAM_OPEN announced (after validation)."""

    stream_id: int
    size: int
    chunk_size: int
    headers: dict[str, Any]  # the Message headers the sender attached
    tensor_pack: bool = False
    payload_crc: int | None = None


class Sink:
    """Base class of stream destinations; see the module docstring for the call order."""

    #: Bytes written but not yet consumed; the receiver grants credit only past them.
    pending: int = 0

    def open(self, info: StreamInfo) -> None:
        """Prepare for ``info.size`` bytes."""

    def write(self, offset: int, data: memoryview) -> int:
        """Store ``data`` at ``offset``; return its CRC32C."""
        raise StreamUsageError(f"{type(self).__name__} does not implement write")

    def place(self, offset: int, nbytes: int) -> memoryview | None:
        """A writable view where the chunk at ``offset`` may be received directly, or None."""
        return None

    def write_checked(self, offset: int, data: memoryview, crc: int) -> None:
        """Store a chunk whose CRC32C ``crc`` is already verified (default: :meth:`write`)."""
        self.write(offset, data)

    def finish(self) -> Any:
        """Every byte arrived and checked: return the result."""
        return None

    def abort(self) -> None:
        """Discard everything received (idempotent)."""


def same_memory(a: memoryview, b: memoryview) -> bool:
    """True when two byte views start at the same address and have the same length."""
    if a.nbytes != b.nbytes:
        return False
    return ffi.cast("uintptr_t", ffi.from_buffer(a)) == ffi.cast("uintptr_t", ffi.from_buffer(b))


class BufferSink(Sink):
    """One preallocated, 64-byte aligned buffer of the declared size.

    ``finish`` returns the bytes as a memoryview, or -- for a tensor-pack
    payload (``decode=None`` follows the OPEN's flag) -- a zero-copy
    :class:`~cellnet.native.TensorPack` over the same buffer.  ``buffer`` lets
    the caller supply (and reuse) the destination; ``pool`` (a
    :class:`~cellnet.stream.pool.BufferPool`) supplies a released one.
    """

    def __init__(self, buffer: Any = None, *, decode: bool | None = None, pool: Any = None):
        self._given = None
        if buffer is not None:
            view = as_byte_view(buffer, "sink buffer")
            if view.readonly:
                raise StreamUsageError("sink buffer must be writable")
            self._given = view
        self._decode = decode
        self._pool = pool
        self._buf: memoryview | None = None
        self._pack = False

    def open(self, info: StreamInfo) -> None:
        if self._given is not None:
            if self._given.nbytes < info.size:
                raise StreamUsageError(
                    f"sink buffer holds {self._given.nbytes} bytes, the stream has {info.size}")
            self._buf = self._given[: info.size]
        elif self._pool is not None:
            self._buf = self._pool.acquire(info.size)
        else:
            self._buf = aligned_buffer(info.size)
        self._pack = info.tensor_pack if self._decode is None else self._decode
        self._ready = 0  # bytes of the buffer whose pages place() has faulted in

    def write(self, offset: int, data: memoryview) -> int:
        assert self._buf is not None, "write before open"
        return copy_crc32c(self._buf[offset : offset + data.nbytes], data)

    def place(self, offset: int, nbytes: int) -> memoryview | None:
        buf = self._buf
        if buf is None or offset + nbytes > buf.nbytes:
            return None
        if offset + nbytes > self._ready:  # fault fresh pages in ahead, a batch at a time
            ready = min(buf.nbytes, max(offset + nbytes, self._ready + STEP))
            prefault(buf, self._ready, ready)
            self._ready = ready
        return buf[offset : offset + nbytes]

    def write_checked(self, offset: int, data: memoryview, crc: int) -> None:
        assert self._buf is not None, "write before open"
        dst = self._buf[offset : offset + data.nbytes]
        if not same_memory(dst, data):  # received elsewhere: copy it in
            dst[:] = data

    def finish(self) -> Any:
        buf, self._buf = self._buf, None
        assert buf is not None, "finish before open"
        # every chunk and the whole payload passed their CRC: skip the pack's data pass
        return decode_pack(buf, verify=False) if self._pack else buf

    def abort(self) -> None:
        self._buf = None


class FileSink(Sink):
    """Writes the payload to ``path`` (via ``path + ".part"``, renamed only once complete)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._file = None

    def open(self, info: StreamInfo) -> None:
        self._file = open(self._part, "wb")

    def write(self, offset: int, data: memoryview) -> int:
        assert self._file is not None, "write before open"
        self._file.write(data)
        return crc32c(data)

    def finish(self) -> pathlib.Path:
        assert self._file is not None, "finish before open"
        self._file.close()
        self._file = None
        os.replace(self._part, self.path)
        return self.path

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._part.unlink(missing_ok=True)
