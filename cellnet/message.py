"""Message: what cells exchange -- a header dict plus a payload (a buffer, None or tensors).

Headers map ``str`` names to CBOR-serialisable values.  Names starting with
``cellnet.`` are reserved for the runtime; :class:`MessageHeaderKey` lists
them.  The payload is ``None``, any contiguous buffer (``bytes``,
``bytearray``, ``memoryview``, ...), or a mapping of names to numpy arrays,
which travels as a native tensor pack and arrives as zero-copy views.

This module does no I/O and knows nothing about frames; ``cellnet.wire.codec``
turns a Message into wire segments and back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import numpy as np

from cellnet._torch import as_numpy_tensors

__all__ = [
    "RESERVED_PREFIX",
    "Message",
    "MessageHeaderKey",
    "MessageType",
    "Payload",
    "PayloadKind",
]

#: Header names with this prefix belong to the runtime.
RESERVED_PREFIX = "cellnet."


class MessageHeaderKey(enum.StrEnum):
    """Reserved header names (values are what goes on the wire)."""

    CHANNEL = "cellnet.channel"
    TOPIC = "cellnet.topic"
    ORIGIN = "cellnet.origin"  # FQCN of the cell that created the message
    DESTINATION = "cellnet.destination"  # FQCN of the final target
    FROM_CELL = "cellnet.from_cell"  # previous hop (set by each forwarding cell)
    TO_CELL = "cellnet.to_cell"  # next hop
    MSG_TYPE = "cellnet.msg_type"  # a MessageType
    REQ_ID = "cellnet.req_id"  # pairs a reply with its request
    RETURN_CODE = "cellnet.return_code"  # a ReturnCode value, on replies
    ERROR = "cellnet.error"  # human-readable error text, on failed replies
    HOP_COUNT = "cellnet.hop_count"  # hops taken so far (loop protection)
    PAYLOAD_TYPE = "cellnet.payload_type"  # application's description of the payload
    SEND_TIME = "cellnet.send_time"
    OPTIONAL = "cellnet.optional"  # an unreachable target is not an error
    STREAM_ID = "cellnet.stream_id"  # payload arrives as a chunked stream


class MessageType(enum.StrEnum):
    """What a message is for; stored under ``MessageHeaderKey.MSG_TYPE``."""

    REQUEST = "req"
    REPLY = "reply"
    FIRE_AND_FORGET = "fnf"


class PayloadKind(enum.StrEnum):
    """The three shapes a payload can take."""

    NONE = "none"
    BYTES = "bytes"
    TENSORS = "tensors"


#: A payload: nothing, a contiguous buffer, or named numpy arrays.
Payload = None | bytes | bytearray | memoryview | Mapping[str, np.ndarray]

_BY_NAME = {k.name.lower(): k.value for k in MessageHeaderKey}
# plain-str header names for the hot paths (an enum member's ``.value`` is a slow descriptor)
_H = {k.name: k.value for k in MessageHeaderKey}
_CHANNEL, _TOPIC, _MSG_TYPE, _REQ_ID = _H["CHANNEL"], _H["TOPIC"], _H["MSG_TYPE"], _H["REQ_ID"]
_RETURN_CODE, _ERROR, _ORIGIN = _H["RETURN_CODE"], _H["ERROR"], _H["ORIGIN"]
_DESTINATION, _HOP_COUNT = _H["DESTINATION"], _H["HOP_COUNT"]
_REPLY = MessageType.REPLY.value


def _header_name(key: Any) -> str:
    if type(key) is str:
        return key
    if isinstance(key, str):  # a StrEnum member: keep its plain value
        return str(key)
    raise TypeError(f"header names must be str, got {type(key).__name__} {key!r}")


def _checked_payload(payload: Any) -> Any:
    if payload is None or type(payload) is bytes:
        return payload
    if isinstance(payload, Mapping):
        payload = as_numpy_tensors(payload)  # torch CPU tensors become numpy views (no copy)
        for name, arr in payload.items():
            if type(name) is not str:
                raise TypeError(f"tensor names must be str, got {name!r}")
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"tensor {name!r} must be a numpy array, got {type(arr).__name__}")
        return payload
    if isinstance(payload, np.ndarray):
        raise TypeError(
            "a bare numpy array is ambiguous as a payload: pass {'name': array} to send it "
            "as a tensor, or memoryview(array) to send its raw bytes"
        )
    try:
        view = memoryview(payload)
    except TypeError:
        raise TypeError(
            f"payload must be None, a bytes-like buffer or a mapping of numpy arrays, "
            f"got {type(payload).__name__}"
        ) from None
    if not view.c_contiguous:
        raise ValueError("payload buffer must be C-contiguous")
    if isinstance(payload, bytearray | memoryview):
        return payload
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _payload_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    a_map, b_map = isinstance(a, Mapping), isinstance(b, Mapping)
    if a_map or b_map:
        if not (a_map and b_map) or list(a) != list(b):
            return False
        return all(
            a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k])
            for k in a
        )
    return memoryview(a).cast("B") == memoryview(b).cast("B")


def headers_from_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map keyword names to header names: a reserved key's lower-case name
    (``req_id``, ``origin``, ...) becomes its ``cellnet.`` name, others stay as given."""
    return {_BY_NAME.get(name, name): value for name, value in kwargs.items()}


class Message:
    """Headers plus a payload.  Mutable: routers update hop bookkeeping in place."""

    __slots__ = ("headers", "payload")

    headers: dict[str, Any]
    payload: Payload

    def __init__(self, headers: Mapping[str, Any] | None = None, payload: Payload = None):
        if headers is None:
            headers = {}
        elif not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a mapping, got {type(headers).__name__}")
        self.headers = {_header_name(k): v for k, v in headers.items()}
        self.payload = _checked_payload(payload)

    @classmethod
    def _from_wire(cls, headers: dict[str, Any], payload: Payload) -> Message:
        """Wrap parts a decoder has already validated, without copying or re-checking."""
        msg = object.__new__(cls)
        msg.headers = headers
        msg.payload = payload
        return msg

    # ------------------------------------------------------------ builders
    @classmethod
    def request(cls, channel: str, topic: str, payload: Payload = None, **headers: Any) -> Message:
        """A request on ``(channel, topic)``; keyword headers as in :func:`headers_from_kwargs`."""
        return cls._addressed(MessageType.REQUEST, channel, topic, payload, headers)

    @classmethod
    def fire_and_forget(
        cls, channel: str, topic: str, payload: Payload = None, **headers: Any
    ) -> Message:
        """A message on ``(channel, topic)`` that expects no reply."""
        return cls._addressed(MessageType.FIRE_AND_FORGET, channel, topic, payload, headers)

    @classmethod
    def _addressed(cls, kind, channel, topic, payload, extra) -> Message:
        for what, value in (("channel", channel), ("topic", topic)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{what} must be a non-empty str, got {value!r}")
        headers = {
            MessageHeaderKey.CHANNEL.value: str(channel),
            MessageHeaderKey.TOPIC.value: str(topic),
            MessageHeaderKey.MSG_TYPE.value: kind.value,
        }
        headers.update(headers_from_kwargs(extra))
        return cls(headers, payload)

    def reply(
        self, rc: str = "OK", payload: Payload = None, *, error: str | None = None, **headers: Any
    ) -> Message:
        """The reply to this message: same channel/topic/req_id, origin and destination swapped."""
        if not isinstance(rc, str) or not rc:
            raise ValueError(f"return code must be a non-empty str, got {rc!r}")
        mine = self.headers
        out = {
            _CHANNEL: mine.get(_CHANNEL),
            _TOPIC: mine.get(_TOPIC),
            _MSG_TYPE: _REPLY,
            _RETURN_CODE: rc if type(rc) is str else str(rc),
        }
        if _REQ_ID in mine:
            out[_REQ_ID] = mine[_REQ_ID]
        if _ORIGIN in mine:
            out[_DESTINATION] = mine[_ORIGIN]
        if _DESTINATION in mine:
            out[_ORIGIN] = mine[_DESTINATION]
        if error is not None:
            out[_ERROR] = str(error)
        if headers:
            out.update(headers_from_kwargs(headers))
            return Message(out, payload)
        if payload is None or type(payload) is bytes:
            return Message._from_wire(out, payload)  # nothing to check: plain str keys
        return Message(out, payload)

    # ------------------------------------------------------------ accessors
    def get_header(self, key: str, default: Any = None) -> Any:
        return self.headers.get(_header_name(key), default)

    def set_header(self, key: str, value: Any) -> None:
        self.headers[_header_name(key)] = value

    @property
    def channel(self) -> str | None:
        return self.headers.get(_CHANNEL)

    @property
    def topic(self) -> str | None:
        return self.headers.get(_TOPIC)

    @property
    def msg_type(self) -> str | None:
        return self.headers.get(_MSG_TYPE)

    @property
    def req_id(self) -> Any:
        return self.headers.get(_REQ_ID)

    @property
    def return_code(self) -> str | None:
        return self.headers.get(_RETURN_CODE)

    @property
    def error(self) -> str | None:
        return self.headers.get(_ERROR)

    @property
    def origin(self) -> str | None:
        return self.headers.get(_ORIGIN)

    @property
    def destination(self) -> str | None:
        return self.headers.get(_DESTINATION)

    @property
    def hop_count(self) -> int:
        return self.headers.get(_HOP_COUNT, 0)

    @property
    def payload_kind(self) -> PayloadKind:
        if self.payload is None:
            return PayloadKind.NONE
        if isinstance(self.payload, Mapping):
            return PayloadKind.TENSORS
        return PayloadKind.BYTES

    # ------------------------------------------------------------ dunder
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.headers == other.headers and _payload_equal(self.payload, other.payload)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        p = self.payload
        if p is None:
            desc = "None"
        elif isinstance(p, Mapping):
            desc = "{" + ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in p.items()) + "}"
        else:
            desc = f"<{memoryview(p).nbytes} bytes>"
        return f"Message(headers={self.headers!r}, payload={desc})"
