"""cellnet: federated computing on a peer-to-peer cell network with a native hot path."""

from __future__ import annotations

from cellnet import errors
from cellnet.errors import (
    BufferTooSmallError,
    CellnetError,
    ChecksumError,
    CorruptDataError,
    DTypeError,
    FQCNError,
    InvalidArgumentError,
    LimitExceededError,
    LocalProtocolError,
    NativeBuildError,
    NativeError,
    ProtocolError,
    RemoteProtocolError,
    ShapeError,
    TruncatedError,
    UnsupportedVersionError,
)
from cellnet.native import crc32c

__version__ = "0.1.0"

__all__ = [
    "BufferTooSmallError",
    "CellnetError",
    "ChecksumError",
    "CorruptDataError",
    "DTypeError",
    "FQCNError",
    "InvalidArgumentError",
    "LimitExceededError",
    "LocalProtocolError",
    "NativeBuildError",
    "NativeError",
    "ProtocolError",
    "RemoteProtocolError",
    "ShapeError",
    "TruncatedError",
    "UnsupportedVersionError",
    "__version__",
    "crc32c",
    "errors",
]
