"""Message <-> frame codec: one Message per MESSAGE frame, many small ones per BATCH frame.

A MESSAGE frame carries the message's headers as the frame headers and its
payload as the frame payload, untouched.  The payload's shape is in the frame
flags: ``NO_PAYLOAD`` for ``None`` (so ``b""`` and ``None`` stay distinct) and
``TENSOR_PAYLOAD`` for a mapping of arrays, sent as the native tensor pack's
segments (no copy on the way out) and decoded as zero-copy views over the
received buffer.

A BATCH frame has the header ``{"count": n}`` and a payload that is one CBOR
array of ``n`` items ``[headers, kind, body]`` -- kind 0: no payload (body
null), 1: bytes, 2: tensor pack bytes.  Batches are for small messages (bulk
fire-and-forget), so copying their payloads into the CBOR is cheaper than
framing each one.

The tensor pack codec is ``cellnet.native.pack``; it is imported only when a
tensor payload is met.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2

from cellnet._torch import as_numpy_tensors
from cellnet.errors import CellnetError, LocalProtocolError, RemoteProtocolError
from cellnet.message import Message
from cellnet.native import ffi
from cellnet.wire._cbor import loads_exact
from cellnet.wire.frame import (
    BATCH_COUNT,
    BATCH_HEADERS,
    Frame,
    FrameFlags,
    FrameType,
    _check_headers,
    aligned_buffer,
    as_byte_view,
    check_lengths,
    encode_frame,
    seal_head,
)
from cellnet.wire.limits import WireLimits

__all__ = [
    "decode_batch",
    "decode_message",
    "decode_messages",
    "encode_batch",
    "encode_message",
    "encode_small_message",
]

_KIND_NONE, _KIND_BYTES, _KIND_TENSORS = 0, 1, 2
_NONE_FLAG = FrameFlags.NONE
_NO_PAYLOAD_FLAG = FrameFlags.NO_PAYLOAD
_TENSOR_FLAG = FrameFlags.TENSOR_PAYLOAD
_MESSAGE = FrameType.MESSAGE
_from_wire = Message._from_wire
_dumps = cbor2.dumps
_NULL = ffi.NULL


def _pack():
    """The native tensor pack codec (looked up lazily: it is only needed for tensors)."""
    return importlib.import_module("cellnet.native.pack")


def _tensor_segments(tensors: Mapping) -> list:
    tensors = as_numpy_tensors(tensors)  # torch CPU tensors: numpy views, no copy
    try:
        return _pack().encode_segments(tensors, getattr(tensors, "meta", None))
    except CellnetError as exc:
        raise LocalProtocolError(f"cannot pack tensor payload: {exc}") from exc


def _tensors_from(data: Any, verify: bool) -> Any:
    try:
        return _pack().decode(data, verify=verify)
    except CellnetError as exc:
        raise RemoteProtocolError(f"bad tensor payload: {exc}") from exc


def encode_message(msg: Message, *, limits: WireLimits | None = None) -> list[bytes | memoryview]:
    """A Message as the segments of one MESSAGE frame (payload buffers are not copied)."""
    if type(msg) is not Message and not isinstance(msg, Message):
        raise TypeError(f"expected a Message, got {type(msg).__name__}")
    payload = msg.payload
    if payload is None:
        flags, body = _NO_PAYLOAD_FLAG, None
    elif type(payload) is not bytes and isinstance(payload, Mapping):
        flags, body = _TENSOR_FLAG, _tensor_segments(payload)
    else:
        flags, body = _NONE_FLAG, payload
    return encode_frame(_MESSAGE, msg.headers, body, flags=flags, limits=limits)


def encode_small_message(headers: dict, payload: bytes | None, limits: WireLimits) -> list:
    """A MESSAGE frame whose payload is ``bytes`` or None, as one buffer (prefix, headers and
    payload together: one TLS record, no join later).

    The request/reply fast path: ``headers`` is a map this runtime built (text
    keys, not re-checked); anything else goes through :func:`encode_message`.
    """
    try:
        hdr = _dumps(headers)
    except Exception as exc:
        raise LocalProtocolError(f"headers are not CBOR-serialisable: {exc}") from exc
    if payload is None:
        check_lengths(len(hdr), 0, limits)
        return [seal_head(_MESSAGE, _NO_PAYLOAD_FLAG, hdr, 0, _NULL, 0, 0)]
    plen = len(payload)
    check_lengths(len(hdr), plen, limits)
    return [seal_head(_MESSAGE, _NONE_FLAG, hdr, plen, payload, plen, 0, with_payload=True)]


def decode_message(frame: Frame, *, verify_tensors: bool = False) -> Message:
    """The Message a MESSAGE frame carries.

    A tensor payload becomes read-only numpy views over the frame's buffer.
    The frame decoder has already checked the payload's CRC32C, so the pack's
    own per-tensor checksums are skipped unless ``verify_tensors`` is true
    (its structure is always validated).
    """
    if frame.type is not _MESSAGE:
        raise LocalProtocolError(f"decode_message() needs a MESSAGE frame, got {frame.type.name}")
    flags = frame.flags
    data = frame.payload
    if flags is _NONE_FLAG:
        payload: Any = data
    elif flags is _NO_PAYLOAD_FLAG:
        if len(data):
            raise RemoteProtocolError("a NO_PAYLOAD frame must carry no payload bytes")
        payload = None
    elif flags is _TENSOR_FLAG:
        payload = _tensors_from(data, verify_tensors)
    else:
        raise RemoteProtocolError("a NO_PAYLOAD frame must carry no payload bytes")
    return _from_wire(frame.headers, payload)


def _batch_item(msg: Message, shared: dict) -> list:
    if type(msg) is not Message and not isinstance(msg, Message):
        raise TypeError(f"expected a Message, got {type(msg).__name__}")
    headers = msg.headers
    try:
        same = headers is shared or headers == shared
    except Exception:  # a value without plain equality: sent as is (CBOR names any problem)
        same = False
    if same:
        headers = None  # the batch's shared headers stand for them
    payload = msg.payload
    if type(payload) is bytes:
        return [headers, _KIND_BYTES, payload]
    if payload is None:
        return [headers, _KIND_NONE, None]
    if isinstance(payload, Mapping):
        return [headers, _KIND_TENSORS, b"".join(_tensor_segments(payload))]
    if type(payload) is not bytes:  # cbor2 writes a memoryview as an array of ints
        payload = as_byte_view(payload).tobytes()
    return [headers, _KIND_BYTES, payload]


def _text_keys(headers: Any) -> bool:
    if type(headers) is not dict:
        return False
    for key in headers:
        if type(key) is not str:
            return False
    return True


def encode_batch(
    msgs: Iterable[Message], *, limits: WireLimits | None = None
) -> list[bytes | memoryview]:
    """Several small Messages as the segments of one BATCH frame (order is kept).

    The first message's headers go once, in the frame's headers
    (``BATCH_HEADERS``); each item whose headers equal them carries null
    instead, so messages that differ only in payload cost their payload."""
    msgs = list(msgs)
    if not msgs:
        raise LocalProtocolError("a BATCH frame needs at least one message")
    shared = getattr(msgs[0], "headers", None)
    if not _text_keys(shared):
        shared = {}
    items = [_batch_item(m, shared) for m in msgs]
    if limits is not None and len(items) > limits.max_batch_count:
        raise LocalProtocolError(
            f"a batch of {len(items)} messages exceeds the limit of {limits.max_batch_count}"
        )
    for item in items:
        if item[0] is not None and not _text_keys(item[0]):
            _check_headers(item[0])  # raises the LocalProtocolError that names the bad key
    try:
        body = cbor2.dumps(items)
    except Exception as exc:
        raise LocalProtocolError(f"message headers are not CBOR-serialisable: {exc}") from exc
    frame_headers = {BATCH_COUNT: len(items), BATCH_HEADERS: shared}
    return encode_frame(FrameType.BATCH, frame_headers, body, limits=limits)


def decode_batch(frame: Frame, *, verify_tensors: bool = False) -> list[Message]:
    """The Messages of a BATCH frame, in the order they were added."""
    if frame.type is not FrameType.BATCH:
        raise LocalProtocolError(f"decode_batch() needs a BATCH frame, got {frame.type.name}")
    count = frame.headers.get(BATCH_COUNT)
    shared = frame.headers.get(BATCH_HEADERS)
    if shared is not None and not _text_keys(shared):
        raise RemoteProtocolError("BATCH shared headers must be a map with text keys")
    items = loads_exact(frame.payload, "BATCH payload")
    if type(items) is not list or len(items) != count:
        raise RemoteProtocolError(f"BATCH payload is not an array of {count!r} items")
    out = []
    for i, item in enumerate(items):
        if type(item) is not list or len(item) != 3:
            raise RemoteProtocolError(f"BATCH item {i} is not a [headers, kind, body] array")
        headers, kind, body = item
        if type(kind) is not int:
            raise RemoteProtocolError(f"BATCH item {i}: payload kind must be an int")
        if headers is None and shared is not None:
            headers = dict(shared)  # each message owns its headers (relays change them)
        elif not _text_keys(headers):
            raise RemoteProtocolError(f"BATCH item {i}: headers must be a map with text keys")
        if kind == _KIND_BYTES and type(body) is bytes:
            out.append(_from_wire(headers, body))
            continue
        if kind == _KIND_NONE and body is None:
            payload: Any = None
        elif kind == _KIND_BYTES and type(body) is bytes:
            payload = body
        elif kind == _KIND_TENSORS and type(body) is bytes:
            buf = aligned_buffer(len(body))  # tensor data must sit 64-byte aligned
            buf[:] = body
            payload = _tensors_from(buf, verify_tensors)
        else:
            raise RemoteProtocolError(f"BATCH item {i}: bad payload kind {kind!r}")
        out.append(Message._from_wire(headers, payload))
    return out


def decode_messages(frame: Frame, *, verify_tensors: bool = False) -> list[Message]:
    """The Messages a MESSAGE or BATCH frame carries (one or many)."""
    if frame.type is FrameType.BATCH:
        return decode_batch(frame, verify_tensors=verify_tensors)
    return [decode_message(frame, verify_tensors=verify_tensors)]
