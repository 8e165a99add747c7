"""Hard limits a receiver enforces on what a (possibly hostile) peer may send."""

from __future__ import annotations

import dataclasses

#: Bytes a frame's header length field can express (u32).
HEADER_LEN_MAX = 2**32 - 1
#: Bytes a frame's payload length field can express (u64).
PAYLOAD_LEN_MAX = 2**64 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class WireLimits:
    """Upper bounds checked against every declared length before anything is allocated.

    ``max_header_bytes`` bounds the CBOR header block of one frame,
    ``max_payload_bytes`` the payload of one frame (bigger objects travel as
    streams of chunk frames), ``max_batch_count`` the messages in one BATCH frame.
    """

    max_header_bytes: int = 64 * 1024
    max_payload_bytes: int = 256 * 1024 * 1024
    max_batch_count: int = 4096

    def __post_init__(self) -> None:
        for field, top in (
            ("max_header_bytes", HEADER_LEN_MAX),
            ("max_payload_bytes", PAYLOAD_LEN_MAX),
            ("max_batch_count", HEADER_LEN_MAX),
        ):
            value = getattr(self, field)
            if type(value) is not int:
                raise TypeError(f"WireLimits.{field} must be an int, got {type(value).__name__}")
            if not 0 < value <= top:
                raise ValueError(f"WireLimits.{field} must be in 1..{top}, got {value}")
