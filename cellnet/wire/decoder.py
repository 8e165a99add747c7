"""Incremental sans-IO frame decoder: bytes in, in any chunking; Frames out.

Theory of operation.  The decoder is a three-state machine per frame --
PREFIX, HEADERS, PAYLOAD -- fed by :meth:`FrameDecoder.receive_data` and
driven by :meth:`FrameDecoder.next_frame`, which returns a :class:`Frame`,
``NEED_DATA`` or (after a clean end of stream) ``CLOSED``.  It never does I/O.

Small bytes (prefixes, headers, payloads under ``large_payload``) collect in
one ``bytearray`` read from an offset; consumed bytes are dropped once per
``receive_data`` call (deleting a bytearray's front is O(1) in CPython), so
every byte is copied in once and out once -- no quadratic re-copying however
the stream is chunked.

Every declared length is checked, against the prefix CRC and then against
:class:`WireLimits`, as soon as the 32 prefix bytes are in -- before the
headers or payload are waited for or any room is set aside for them.  A
BATCH frame's message count is checked as soon as its headers are in.  As long
as the caller drains ``next_frame`` after each ``receive_data``, the buffer
never holds more than one incomplete small frame plus one received chunk.

A payload of ``large_payload`` bytes or more (and every tensor payload) gets
a buffer of its own, allocated once at its final size (64-byte aligned, so
tensor data decodes zero-copy and aligned), and incoming bytes are copied
straight into it with the CRC computed in the same pass.  Two doors are left
open for streaming: ``allocate_payload`` lets the link choose that buffer
(e.g. a slice of a model being reassembled from STREAM_DATA chunks, so a
multi-GB object never needs a second copy), and :meth:`get_buffer` /
:meth:`buffer_updated` (as in ``asyncio.BufferedProtocol``) let a transport
read straight into it.

Any protocol violation raises a :class:`RemoteProtocolError` subclass and is
sticky: the decoder refuses to go on, because the link must close.  One
exception: a STREAM_DATA frame whose payload (only) fails its CRC is still
returned, with ``Frame.payload_crc`` set to the CRC of the bytes received --
its prefix and headers are intact, so the link can go on, and the stream
receiver (which compares that CRC with the chunk's own before storing
anything) fails just that stream.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import cbor2

from cellnet.errors import (
    FrameChecksumError,
    FrameFormatError,
    FrameTooLargeError,
    LocalProtocolError,
    RemoteProtocolError,
)
from cellnet.native import copy_crc32c, crc32c, ffi, lib
from cellnet.wire._cbor import loads_exact
from cellnet.wire.frame import (
    _FLAG_VALUES,
    BATCH_COUNT,
    KNOWN_FLAGS,
    MAGIC,
    PREFIX,
    PREFIX_SIZE,
    VERSION,
    Frame,
    FrameFlags,
    FrameType,
    _new_frame,
    aligned_buffer,
)
from cellnet.wire.limits import WireLimits

__all__ = ["CLOSED", "LARGE_PAYLOAD", "NEED_DATA", "FrameDecoder", "PayloadAllocator"]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``next_frame`` needs more bytes before it can return a frame.
NEED_DATA = _Sentinel("NEED_DATA")
#: The peer ended the stream cleanly, at a frame boundary.
CLOSED = _Sentinel("CLOSED")

#: Payloads of at least this many bytes are received into a buffer of their own.
LARGE_PAYLOAD = 64 * 1024

#: ``(frame_type, flags, headers, nbytes) -> writable buffer of at least nbytes``.
PayloadAllocator = Callable[[FrameType, FrameFlags, dict, int], Any]

_PREFIX, _HEADERS, _PAYLOAD, _CLOSED = range(4)
_TENSOR = int(FrameFlags.TENSOR_PAYLOAD)
_TYPES = {int(t): t for t in FrameType}
_BATCH = FrameType.BATCH
_STREAM_DATA = FrameType.STREAM_DATA
_unpack_prefix = PREFIX.unpack_from
#: The prefix's first 8 bytes (magic, version, type, flags, reserved) as one field, then the
#: header and payload lengths (the checksums are checked natively).
_unpack_whole = struct.Struct("<8sI4xQ4x4x").unpack_from
#: Every valid first 8 bytes of a frame the fast path takes -> (type, flags): each frame
#: type with a bytes payload or none (a tensor pack needs an aligned buffer of its own).
_INLINE_HEADS = {
    struct.pack("<2sBBHH", MAGIC, VERSION, t, f, 0): (t, f)
    for t in FrameType
    for f in (FrameFlags.NONE, FrameFlags.NO_PAYLOAD)
}
_is_str = str.__instancecheck__
_verify = lib.cn_frame_verify
_from_buffer = ffi.from_buffer
_loads = cbor2.loads
#: Pending bytes plus new bytes up to this size are joined as bytes; beyond, a bytearray grows.
_CONCAT = 4096
_new = object.__new__
_set = object.__setattr__


class FrameDecoder:
    """Turns a byte stream from one peer into :class:`Frame` objects."""

    def __init__(
        self,
        limits: WireLimits | None = None,
        *,
        allocate_payload: PayloadAllocator | None = None,
        large_payload: int = LARGE_PAYLOAD,
    ) -> None:
        if limits is None:
            limits = WireLimits()
        if not isinstance(limits, WireLimits):
            raise TypeError(f"limits must be WireLimits, got {type(limits).__name__}")
        if type(large_payload) is not int or large_payload < 1:
            raise ValueError(f"large_payload must be a positive int, got {large_payload!r}")
        if allocate_payload is not None and not callable(allocate_payload):
            raise TypeError("allocate_payload must be callable")
        self.limits = limits
        self._max_header = limits.max_header_bytes
        self._max_payload = limits.max_payload_bytes
        self._allocate = allocate_payload
        self._large = large_payload
        self._buf: bytes | bytearray = b""  # adopted bytes, or a growable bytearray
        self._pos = 0
        self._eof = False
        self._error: BaseException | None = None
        self._state = _PREFIX
        # the frame being received
        self._type = FrameType.MESSAGE
        self._flags = FrameFlags.NONE
        self._flag_bits = 0
        self._hlen = self._hcrc = self._plen = self._pcrc = 0
        self._headers: dict = {}
        self._payload: memoryview | None = None  # own buffer of a large payload
        self._filled = 0
        self._crc = 0
        #: Frames returned so far.
        self.frames_received = 0

    # ------------------------------------------------------------------ input
    def receive_data(self, data: Any) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed the stream."""
        if self._eof:
            raise LocalProtocolError("receive_data() called after end of stream (b'')")
        if self._error is not None:
            return  # the link is closing; what else arrives is irrelevant
        if not len(data):
            self._eof = True
            return
        if self._payload is not None:  # inside a large payload: copy straight into it
            view = memoryview(data).cast("B")
            n = min(view.nbytes, self._plen - self._filled)
            end = self._filled + n
            self._crc = copy_crc32c(self._payload[self._filled : end], view[:n], self._crc)
            self._filled = end
            if n == view.nbytes:
                return
            data = view[n:]
        buf, pos = self._buf, self._pos
        if pos == len(buf) and type(data) is bytes:
            self._buf, self._pos = data, 0  # nothing pending: adopt the bytes, no copy
            return
        if type(buf) is bytes and type(data) is bytes and len(buf) - pos + len(data) <= _CONCAT:
            self._buf, self._pos = buf[pos:] + data, 0  # small: one bytes concatenation
            return
        if type(buf) is bytes:  # pending bytes go into a growable buffer, once
            with memoryview(buf) as mv:
                self._buf = bytearray(mv[pos:])
        elif pos:
            del buf[:pos]
        self._pos = 0
        self._buf += data

    def get_buffer(self) -> memoryview | None:
        """Writable view of the rest of the large payload being received, else None.

        A transport may read straight into it and then call
        :meth:`buffer_updated`; otherwise use :meth:`receive_data`.
        """
        if self._payload is None or self._error is not None:
            return None
        return self._payload[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        """Record that ``nbytes`` were written at the start of :meth:`get_buffer`'s view."""
        if self._payload is None or self._error is not None:
            raise LocalProtocolError("buffer_updated() without a buffer from get_buffer()")
        if type(nbytes) is not int or not 0 <= nbytes <= self._plen - self._filled:
            raise LocalProtocolError(
                f"buffer_updated({nbytes!r}): at most {self._plen - self._filled} bytes fit"
            )
        end = self._filled + nbytes
        self._crc = crc32c(self._payload[self._filled : end], self._crc)
        self._filled = end

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buf) - self._pos + (self._filled if self._payload is not None else 0)

    # ----------------------------------------------------------------- output
    def next_frame(self) -> Frame | _Sentinel:
        """The next complete frame, ``NEED_DATA``, or ``CLOSED`` after a clean end."""
        if self._error is not None:
            raise self._error
        try:
            if self._state == _PREFIX:
                if self._pos == len(self._buf) and not self._eof:
                    return NEED_DATA  # all taken: the common end of a read, answered at once
                frame = self._whole_frame()
                if frame is not None:
                    return frame
            return self._step()
        except BaseException as exc:
            self._error = exc
            self._buf = b""
            self._pos = 0
            self._payload = None
            raise

    def _step(self) -> Frame | _Sentinel:
        state = self._state
        if state == _PREFIX:
            if len(self._buf) - self._pos < PREFIX_SIZE:
                if not self._eof:
                    return NEED_DATA
                if len(self._buf) == self._pos:
                    self._state = _CLOSED
                    return CLOSED
                self._truncated("prefix", PREFIX_SIZE)
            self._parse_prefix()
            state = self._state = _HEADERS
        if state == _HEADERS:
            need = PREFIX_SIZE + self._hlen
            if len(self._buf) - self._pos < need:
                if self._eof:
                    self._truncated("headers", need)
                return NEED_DATA
            self._parse_headers()
            self._pos += need
            state = self._state = _PAYLOAD
            if self._plen and (self._plen >= self._large or self._flag_bits & _TENSOR):
                self._start_large_payload()
        if state == _PAYLOAD:
            return self._finish_payload()
        if state == _CLOSED:
            return CLOSED
        raise AssertionError(f"decoder in unknown state {state}")  # pragma: no cover

    def _truncated(self, part: str, need: int) -> None:
        have = len(self._buf) - self._pos
        raise RemoteProtocolError(
            f"peer closed the stream inside a frame's {part} ({have} of {need} bytes)"
        )

    def _parse_prefix(self) -> None:
        fields = _unpack_prefix(self._buf, self._pos)
        magic, version, crc = fields[0], fields[1], fields[9]
        if magic != MAGIC:
            raise FrameFormatError(f"bad frame magic {magic!r} (expected {MAGIC!r})")
        if version != VERSION:
            raise FrameFormatError(f"unsupported frame version {version} (this side speaks 1)")
        with memoryview(self._buf) as mv:
            got = crc32c(mv[self._pos : self._pos + PREFIX_SIZE - 4])
        if got != crc:
            raise FrameChecksumError(f"frame prefix checksum {got:#010x} != {crc:#010x}")
        self._accept_prefix(fields)

    def _accept_prefix(self, fields: tuple) -> None:
        """Check a prefix whose CRC holds (magic and version included) and take its fields."""
        magic, version, ftype, flags, reserved, hlen, hcrc, plen, pcrc, _ = fields
        if magic != MAGIC:
            raise FrameFormatError(f"bad frame magic {magic!r} (expected {MAGIC!r})")
        if version != VERSION:
            raise FrameFormatError(f"unsupported frame version {version} (this side speaks 1)")
        if ftype not in _TYPES:
            raise FrameFormatError(f"unknown frame type {ftype}")
        if flags & ~KNOWN_FLAGS or reserved:
            raise FrameFormatError(f"reserved frame bits set (flags={flags:#x}, rsv={reserved})")
        limits = self.limits
        if hlen > limits.max_header_bytes:
            raise FrameTooLargeError(
                f"frame headers of {hlen} bytes exceed the limit of {limits.max_header_bytes}"
            )
        if plen > limits.max_payload_bytes:
            raise FrameTooLargeError(
                f"frame payload of {plen} bytes exceeds the limit of {limits.max_payload_bytes}"
            )
        self._type = _TYPES[ftype]
        self._flags = _FLAG_VALUES[flags]
        self._flag_bits = flags
        self._hlen, self._hcrc, self._plen, self._pcrc = hlen, hcrc, plen, pcrc

    def _whole_frame(self) -> Frame | None:
        """The next frame if it is small, wholly buffered and passes every check; else None.

        One native call checks the three CRCs and that the headers are one
        CBOR item; every other check is repeated by the step-by-step path,
        which also produces the precise error when this one declines.
        """
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < PREFIX_SIZE:
            return None
        head, hlen, plen = _unpack_whole(buf, pos)
        kind = _INLINE_HEADS.get(head)  # magic, version, type, flags and reserved in one look
        end = PREFIX_SIZE + hlen + plen
        if (
            kind is None
            or end > avail
            or plen >= self._large
            or hlen > self._max_header
            or plen > self._max_payload
            or _verify(buf if type(buf) is bytes else _from_buffer(buf), pos, avail)
        ):
            return None
        ftype, flags = kind
        hstart = pos + PREFIX_SIZE
        pstart = hstart + hlen
        if type(buf) is bytes:
            hdr = buf[hstart:pstart]
            payload = buf[pstart : pos + end] if plen else b""
        else:
            with memoryview(buf) as mv:
                hdr = mv[hstart:pstart].tobytes()
                payload = mv[pstart : pos + end].tobytes() if plen else b""
        if hlen:
            try:
                headers = _loads(hdr)
            except Exception as exc:  # well-formed CBOR (checked) that cbor2 cannot decode
                raise RemoteProtocolError(f"malformed CBOR in frame headers: {exc}") from exc
            if type(headers) is not dict or not all(map(_is_str, headers)):
                return None  # the step-by-step path names the error
        else:
            headers = {}
        if ftype is _BATCH:
            self._check_batch(headers)
        self._pos = pos + end
        self.frames_received += 1
        frame = _new(Frame)
        _set(frame, "type", ftype)
        _set(frame, "headers", headers)
        _set(frame, "payload", payload)
        _set(frame, "flags", flags)
        _set(frame, "payload_crc", None)
        return frame

    def _parse_headers(self) -> None:
        if not self._hlen:
            headers: Any = {} if self._type is not FrameType.BATCH else self._decode_headers(b"")
        else:
            start = self._pos + PREFIX_SIZE
            with memoryview(self._buf) as mv:
                block = mv[start : start + self._hlen]
                try:
                    got = crc32c(block)
                    if got != self._hcrc:
                        raise FrameChecksumError(
                            f"frame header checksum {got:#010x} != {self._hcrc:#010x}"
                        )
                    headers = self._decode_headers(block)
                finally:
                    block.release()
        self._headers = headers

    def _decode_headers(self, block: Any) -> dict:
        """The header map of a checked header block (a BATCH frame's count checked too)."""
        headers = loads_exact(block, "frame headers") if len(block) else {}
        if type(headers) is not dict:
            raise RemoteProtocolError(
                f"frame headers must be a CBOR map, got {type(headers).__name__}"
            )
        for key in headers:
            if type(key) is not str:
                raise RemoteProtocolError(f"frame header names must be text, got {key!r}")
        if self._type is _BATCH:
            self._check_batch(headers)
        return headers

    def _check_batch(self, headers: dict) -> None:
        count = headers.get(BATCH_COUNT)
        if type(count) is not int or count < 1:
            raise RemoteProtocolError(f"BATCH frame needs a positive count, got {count!r}")
        if count > self.limits.max_batch_count:
            raise FrameTooLargeError(
                f"BATCH of {count} messages exceeds the limit of "
                f"{self.limits.max_batch_count}"
            )

    def _start_large_payload(self) -> None:
        plen = self._plen
        if self._allocate is None:
            dest = aligned_buffer(plen)
        else:
            dest = self._checked_dest(self._allocate(self._type, self._flags, self._headers, plen))
        self._payload = dest
        self._crc = 0
        n = min(len(self._buf) - self._pos, plen)
        if n:
            with memoryview(self._buf) as mv:
                src = mv[self._pos : self._pos + n]
                try:
                    self._crc = copy_crc32c(dest, src)
                finally:
                    src.release()
            self._pos += n
        self._filled = n

    def _checked_dest(self, dest: Any) -> memoryview:
        try:
            view = memoryview(dest)
        except TypeError:
            raise LocalProtocolError(
                f"allocate_payload returned {type(dest).__name__}, not a buffer"
            ) from None
        if view.readonly or not view.c_contiguous:
            raise LocalProtocolError("allocate_payload must return a writable contiguous buffer")
        view = view.cast("B")
        if view.nbytes < self._plen:
            raise LocalProtocolError(
                f"allocate_payload returned {view.nbytes} bytes, {self._plen} are needed"
            )
        return view[: self._plen]

    def _finish_payload(self) -> Frame | _Sentinel:
        plen = self._plen
        if self._payload is not None:
            if self._filled < plen:
                if self._eof:
                    raise RemoteProtocolError(
                        f"peer closed the stream inside a frame's payload "
                        f"({self._filled} of {plen} bytes)"
                    )
                return NEED_DATA
            payload: Any = self._payload
            got = self._crc
            self._payload = None
        elif plen:
            pos = self._pos
            if len(self._buf) - pos < plen:
                if self._eof:
                    self._truncated("payload", plen)
                return NEED_DATA
            payload = bytes(self._buf[pos : pos + plen])
            got = crc32c(payload)
            self._pos = pos + plen
        else:
            payload, got = b"", 0
        if got != self._pcrc and self._type is not _STREAM_DATA:
            raise FrameChecksumError(f"frame payload checksum {got:#010x} != {self._pcrc:#010x}")
        self._state = _PREFIX
        self.frames_received += 1
        return _new_frame(self._type, self._headers, payload, self._flags, got)
