"""The cellnet frame: a fixed 32-byte prefix, CBOR headers, then the payload bytes.

Layout (little-endian)::

    offset size  field
     0      2    magic            b"\\xce\\x11"
     2      1    version          1
     3      1    type             FrameType
     4      2    flags            FrameFlags (unknown bits must be 0)
     6      2    reserved         must be 0
     8      4    header_len       bytes of CBOR headers that follow the prefix
    12      4    header_crc       CRC32C of the header bytes
    16      8    payload_len      bytes of payload that follow the headers
    24      4    payload_crc      CRC32C of the payload bytes
    28      4    prefix_crc       CRC32C of prefix bytes 0..27

What the checksums cover, and why.  Everything is covered: the prefix, the
headers and the payload, each by its own CRC32C, checked in that order as the
bytes arrive.  The prefix sum comes first so a flipped bit in a length field
is caught at once, before the receiver waits for (or sets aside room for)
bytes that were never sent; the header sum is checked before one payload byte
is accepted.  The payload is covered too because CRC32C runs at more than ten
times the TLS ceiling of this machine and the receiver folds it into the one
copy it makes anyway (``copy_crc32c``), so it costs close to nothing, while it
catches buffer-handling bugs on our side and corruption on links that are not
encrypted (in-process and unix-socket links).  A separate payload sum also
lets each chunk of a stream be checked on its own.

An empty header map is sent as zero header bytes.  Encoding returns a list of
segments -- ``prefix + headers`` as one ``bytearray``, then the caller's payload
buffers unchanged -- so a large payload is never copied on the way out;
``b"".join(segments)`` gives the frame's bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Mapping
from typing import Any

import cbor2
import numpy as np

from cellnet.errors import LocalProtocolError
from cellnet.native import crc32c, ffi, lib
from cellnet.native._status import check
from cellnet.wire.limits import HEADER_LEN_MAX, PAYLOAD_LEN_MAX, WireLimits

MAGIC = b"\xce\x11"
VERSION = 1

#: The prefix without its last field (prefix_crc), which is the CRC32C of exactly these bytes.
PREFIX_HEAD = struct.Struct("<2sBBHHIIQI")
CRC_FIELD = struct.Struct("<I")
PREFIX = struct.Struct("<2sBBHHIIQII")
PREFIX_SIZE = PREFIX.size  # 32

#: Header of a BATCH frame that says how many messages its payload holds
#: (checked against the limit before the payload is received).
BATCH_COUNT = "count"
#: Header of a BATCH frame: the header map its items share; an item whose headers are
#: exactly these carries null in their place (bulk messages to one hop mostly agree).
BATCH_HEADERS = "headers"

#: Alignment of payload buffers the decoder allocates (tensor data is 64-byte aligned).
PAYLOAD_ALIGN = 64


class FrameType(enum.IntEnum):
    """What a frame carries; the link layer dispatches on it."""

    HELLO = 1  # first frame on a link: who I am, my version and limits
    MESSAGE = 2  # one Message
    BATCH = 3  # several small Messages in one frame (bulk send)
    PING = 4  # liveness probe; the peer answers PONG
    PONG = 5
    GOAWAY = 6  # orderly close, with a reason in the headers
    STREAM_OPEN = 16  # a chunked stream of one large payload begins
    STREAM_DATA = 17  # one chunk of a stream
    STREAM_CREDIT = 18  # receiver grants the sender more chunks (flow control)
    STREAM_END = 19  # sender finished the stream
    STREAM_RESET = 20  # either side aborts the stream


class FrameFlags(enum.IntFlag):
    """Bits of the flags field; any bit not named here must be zero."""

    NONE = 0
    TENSOR_PAYLOAD = 1  # payload is a cellnet tensor pack (decoded zero-copy)
    NO_PAYLOAD = 2  # the message's payload is None (not empty bytes)


_dumps = cbor2.dumps
_seal = lib.cn_frame_seal
_from_buffer = ffi.from_buffer
_NULL = ffi.NULL

KNOWN_FLAGS = int(FrameFlags.TENSOR_PAYLOAD | FrameFlags.NO_PAYLOAD)
_TYPES = {int(t): t for t in FrameType}
_FLAG_VALUES = {v: FrameFlags(v) for v in range(KNOWN_FLAGS + 1) if not v & ~KNOWN_FLAGS}


def _frame_type(value: Any) -> FrameType:
    if type(value) is FrameType:
        return value
    try:
        return _TYPES[value]
    except (KeyError, TypeError):
        raise LocalProtocolError(f"unknown frame type {value!r}") from None


def _flags(value: Any) -> FrameFlags:
    if type(value) is FrameFlags:
        return value
    flags = _FLAG_VALUES.get(value) if type(value) is int else None
    if flags is None:
        raise LocalProtocolError(f"invalid frame flags {value!r}")
    return flags


def _check_headers(headers: Any) -> None:
    if not isinstance(headers, dict):
        raise LocalProtocolError(f"frame headers must be a dict, got {type(headers).__name__}")
    if all(type(key) is str for key in headers):
        return
    for key in headers:
        if not isinstance(key, str):
            raise LocalProtocolError(f"header names must be str, got {key!r}")


def as_byte_view(data: Any, what: str = "payload") -> memoryview:
    """A flat unsigned-byte view of any C-contiguous buffer (no copy)."""
    try:
        view = memoryview(data)
    except TypeError:
        raise LocalProtocolError(
            f"{what} must be a bytes-like buffer, got {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        raise LocalProtocolError(f"{what} buffer must be C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One decoded (or to-be-sent) frame: type, flags, header map and payload bytes."""

    type: FrameType
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    payload: bytes | bytearray | memoryview = b""
    flags: FrameFlags = FrameFlags.NONE
    #: CRC32C of the payload when the decoder computed and checked it (large payloads), else None
    payload_crc: int | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", _frame_type(self.type))
        object.__setattr__(self, "flags", _flags(self.flags))
        _check_headers(self.headers)
        as_byte_view(self.payload)

    def encode(self, limits: WireLimits | None = None) -> list[bytes | memoryview]:
        """The frame as wire segments (see :func:`encode_frame`)."""
        return encode_frame(self.type, self.headers, self.payload, flags=self.flags, limits=limits)


def _new_frame(ftype: FrameType, headers: dict, payload: Any, flags: FrameFlags,
               payload_crc: int | None = None) -> Frame:
    """Build a Frame from parts the decoder has already validated (skips re-validation)."""
    frame = object.__new__(Frame)
    object.__setattr__(frame, "type", ftype)
    object.__setattr__(frame, "headers", headers)
    object.__setattr__(frame, "payload", payload)
    object.__setattr__(frame, "flags", flags)
    object.__setattr__(frame, "payload_crc", payload_crc)
    return frame


def encode_headers(headers: Mapping[str, Any] | None) -> bytes:
    """CBOR bytes of a header map (empty map -> no bytes); LocalProtocolError if impossible."""
    if not headers:
        return b""
    if type(headers) is dict:
        for key in headers:  # the common case, all plain str keys: one cheap pass
            if type(key) is not str:
                _check_headers(headers)
                break
    else:
        if not isinstance(headers, Mapping):
            raise LocalProtocolError(f"headers must be a mapping, got {type(headers).__name__}")
        headers = dict(headers)
        _check_headers(headers)
    try:
        return _dumps(headers)
    except Exception as exc:
        raise LocalProtocolError(f"headers are not CBOR-serialisable: {exc}") from exc


def _payload_views(payload: Any) -> list:
    """The payload (None, one buffer or a list of them) as its non-empty byte views."""
    if payload is None:
        return []
    items = payload if isinstance(payload, list | tuple) else [payload]
    return [seg for seg in map(as_byte_view, items) if seg.nbytes]


def _payload_parts(payload: Any) -> tuple[list, Any, int, int]:
    """``(segments, last segment for the native CRC call, its length, CRC of the others)``."""
    if type(payload) is bytes:  # cffi takes bytes as they are: no view, no from_buffer
        return ([payload], payload, len(payload), 0) if payload else ([], _NULL, 0, 0)
    segments = _payload_views(payload)
    if not segments:
        return segments, _NULL, 0, 0
    crc = 0
    for seg in segments[:-1]:
        crc = crc32c(seg, crc)
    last = segments[-1]
    return segments, _from_buffer(last), last.nbytes, crc


def encode_frame(
    ftype: FrameType | int,
    headers: Mapping[str, Any] | None = None,
    payload: Any = None,
    *,
    flags: FrameFlags | int = FrameFlags.NONE,
    limits: WireLimits | None = None,
    payload_crc: int | None = None,
) -> list[bytes | memoryview]:
    """Encode one frame as ``[prefix + headers, *payload segments]``.

    ``payload`` is ``None``, one buffer, or a list/tuple of buffers sent back to
    back (e.g. a tensor pack's segments); the buffers are referenced, not
    copied, so they must not change until the segments are written.  With
    ``limits`` the frame is also checked against what the peer will accept.
    ``payload_crc``: the payload's CRC32C when the caller already has it (a
    stream chunk checksummed as it was cut), so the payload is not read again.
    """
    if type(ftype) is not FrameType:
        ftype = _frame_type(ftype)
    if type(flags) is not FrameFlags:
        flags = _flags(flags)
    hdr = encode_headers(headers)
    if payload_crc is None:
        segments, last, nlast, pcrc = _payload_parts(payload)
        plen = nlast if len(segments) < 2 else sum(seg.nbytes for seg in segments)
    else:
        segments = _payload_views(payload)
        last, nlast, pcrc = _NULL, 0, payload_crc
        plen = sum(seg.nbytes for seg in segments)
    check_lengths(len(hdr), plen, limits)
    return [seal_head(ftype, flags, hdr, plen, last, nlast, pcrc), *segments]


def check_lengths(hlen: int, plen: int, limits: WireLimits | None) -> None:
    """LocalProtocolError if headers of ``hlen`` or a payload of ``plen`` bytes exceed what
    the peer accepts (``limits``; the format's own maxima without them)."""
    max_hdr, max_pay = HEADER_LEN_MAX, PAYLOAD_LEN_MAX
    if limits is not None:
        max_hdr, max_pay = limits.max_header_bytes, limits.max_payload_bytes
    if hlen > max_hdr:
        raise LocalProtocolError(f"headers take {hlen} bytes, the limit is {max_hdr}")
    if plen > max_pay:
        raise LocalProtocolError(f"payload has {plen} bytes, the limit is {max_pay}")


def seal_head(
    ftype: int,
    flags: int,
    hdr: bytes,
    plen: int,
    last: Any,
    nlast: int,
    pcrc: int,
    *,
    with_payload: bool = False,
) -> bytearray:
    """The prefix, every checksum included, followed by the headers: one native call.

    The payload CRC is ``pcrc`` (of all segments but the last) continued over
    ``last`` (``nlast`` bytes, anything cffi takes as ``const void *``).  With
    ``with_payload`` the payload (then ``last``, the whole of it, as ``bytes``)
    follows in the same buffer: the whole frame in one piece.
    """
    head = bytearray(PREFIX_SIZE)
    head += hdr
    head_len = len(head)
    if with_payload and nlast:
        head += last
    status = _seal(_from_buffer(head), head_len, ftype, flags, plen, last, nlast, pcrc)
    if status:
        check(status, "frame seal")
    return head


def aligned_buffer(nbytes: int, align: int = PAYLOAD_ALIGN) -> memoryview:
    """A writable byte view of ``nbytes`` whose first byte is ``align``-byte aligned."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return memoryview(raw[start : start + nbytes])
