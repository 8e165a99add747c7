"""Stream frame vocabulary: header keys, reset codes, the outgoing-frame record, header checks.

A stream moves one payload as STREAM_OPEN, STREAM_DATA* and STREAM_END frames
from sender to receiver; the receiver answers with STREAM_CREDIT frames, and
either side may send STREAM_RESET.  Every stream frame carries the stream id
under ``"sid"``.  Credit is counted in **bytes** and is absolute: a CREDIT
frame says "you may send every byte below offset ``upto``", so a repeated or
late grant is harmless and a relay can pass grants on unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cellnet.stream._errors import StreamProtocolError
from cellnet.wire.frame import FrameType, as_byte_view, encode_frame

K_ID = "sid"  # stream id (every stream frame)
K_SIZE = "size"  # OPEN: total payload bytes
K_CHUNK = "chunk"  # OPEN: the sender's chunk size (every DATA but the last has it)
K_CREDIT = "credit"  # OPEN: bytes the sender may send before the first CREDIT frame
K_CRC = "crc"  # OPEN (optional) / END: CRC32C of the whole payload; DATA: of the chunk
K_OFF = "off"  # DATA: offset of the chunk in the payload
K_UPTO = "upto"  # CREDIT: the sender may send bytes below this offset
K_MSG = "msg"  # OPEN: the headers of the Message whose payload this is
K_PACK = "pack"  # OPEN: true when the payload is a tensor pack
K_CODE = "code"  # RESET: one of the RESET_* codes
K_REASON = "reason"  # RESET: human-readable text

RESET_CANCEL = "cancel"  # the application cancelled
RESET_LIMIT = "limit"  # refused: over a size or concurrency limit
RESET_CORRUPT = "corrupt"  # a checksum failed
RESET_PROTOCOL = "protocol"  # the peer broke the protocol
RESET_ABORTED = "aborted"  # the link or the relay's other side went away

STREAM_TYPES = frozenset(
    [FrameType.STREAM_OPEN, FrameType.STREAM_DATA, FrameType.STREAM_CREDIT,
     FrameType.STREAM_END, FrameType.STREAM_RESET]
)
#: Frames travelling from sender to receiver; CREDIT goes the other way; RESET both ways.
TO_RECEIVER = frozenset([FrameType.STREAM_OPEN, FrameType.STREAM_DATA, FrameType.STREAM_END])

MiB = 1 << 20
DEFAULT_CHUNK = MiB
#: Receive window as a multiple of the chunk size.
DEFAULT_WINDOW_CHUNKS = 4
MAX_ID = 2**63 - 1
MAX_SIZE = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class OutFrame:
    """A stream frame to send: ``payload`` is a tuple of byte views (a chunk may span segments)."""

    type: FrameType
    headers: dict[str, Any]
    payload: tuple[memoryview, ...] = ()

    @property
    def nbytes(self) -> int:
        """Payload bytes (what credit and fairness count)."""
        return sum(p.nbytes for p in self.payload)

    def encode(self) -> list:
        """Wire segments (no copy of the payload views; a chunk's CRC is not computed again)."""
        if self.type is FrameType.STREAM_DATA:
            return encode_frame(self.type, self.headers, list(self.payload) or None,
                                payload_crc=self.headers[K_CRC])
        return encode_frame(self.type, self.headers, list(self.payload) or None)


def payload_views(payload: Any) -> tuple[memoryview, ...]:
    """A received frame's payload as a tuple of byte views (one buffer or a list of them)."""
    if payload is None:
        return ()
    if isinstance(payload, list | tuple):
        return tuple(v for v in map(as_byte_view, payload) if v.nbytes)
    view = as_byte_view(payload)
    return (view,) if view.nbytes else ()


def stream_id_of(headers: Mapping[str, Any]) -> int:
    """The ``sid`` header, checked."""
    return int_header(headers, K_ID, 0, MAX_ID, None)


def int_header(headers: Mapping[str, Any], key: str, lo: int, hi: int, sid: int | None) -> int:
    """An integer header in ``[lo, hi]``; StreamProtocolError when missing or out of range."""
    value = headers.get(key) if isinstance(headers, Mapping) else None
    if type(value) is not int or not lo <= value <= hi:
        raise StreamProtocolError(
            f"stream frame header {key!r} must be an int in [{lo}, {hi}], got {value!r}", sid)
    return value


def reset_frame(sid: int, code: str, reason: str) -> OutFrame:
    """A STREAM_RESET frame for stream ``sid``."""
    return OutFrame(FrameType.STREAM_RESET, {K_ID: sid, K_CODE: code, K_REASON: reason})


def open_frame(sid: int, size: int, chunk: int, credit: int, payload_crc: int | None,
               msg: Mapping[str, Any] | None, tensor_pack: bool) -> OutFrame:
    """A STREAM_OPEN frame (the optional CRC, message headers and pack flag only when set)."""
    h: dict[str, Any] = {K_ID: sid, K_SIZE: size, K_CHUNK: chunk, K_CREDIT: credit}
    if payload_crc is not None:
        h[K_CRC] = payload_crc
    if msg:
        h[K_MSG] = msg
    if tensor_pack:
        h[K_PACK] = True
    return OutFrame(FrameType.STREAM_OPEN, h)


def credit_frame(sid: int, upto: int) -> OutFrame:
    """A STREAM_CREDIT frame letting the sender go up to byte offset ``upto``."""
    return OutFrame(FrameType.STREAM_CREDIT, {K_ID: sid, K_UPTO: upto})


def reset_text(headers: Mapping[str, Any]) -> tuple[str, str]:
    """``(code, reason)`` of a RESET frame, tolerant of missing or odd values."""
    code = headers.get(K_CODE, "")
    reason = headers.get(K_REASON, "")
    return (code if isinstance(code, str) else repr(code),
            reason if isinstance(reason, str) else repr(reason))
