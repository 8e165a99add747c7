"""Events the stream state machines report (frozen records, h11 style)."""

from __future__ import annotations

import dataclasses
from typing import Any

from cellnet.stream._errors import StreamError
from cellnet.stream.sinks import StreamInfo


@dataclasses.dataclass(frozen=True, slots=True)
class StreamOpened:
    """An incoming stream passed its limits; its sink is open."""

    info: StreamInfo


@dataclasses.dataclass(frozen=True, slots=True)
class StreamCompleted:
    """An incoming stream arrived whole and checked; ``result`` is what its sink returned."""

    info: StreamInfo
    result: Any


@dataclasses.dataclass(frozen=True, slots=True)
class StreamFailed:
    """An incoming stream ended without a payload (reset, corrupt, refused, aborted)."""

    stream_id: int
    error: StreamError


@dataclasses.dataclass(frozen=True, slots=True)
class SendCompleted:
    """An outgoing stream sent its END frame."""

    stream_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class SendFailed:
    """An outgoing stream stopped early (reset by the peer, cancelled, link lost)."""

    stream_id: int
    error: StreamError


Event = StreamOpened | StreamCompleted | StreamFailed | SendCompleted | SendFailed
